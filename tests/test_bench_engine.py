"""make bench-engine, small: every row is counted, through the store, on this run's engine.

valgrind is slow: a handful of profiles of a dozen items (~20 s); ``make test``
installs valgrind first (``make valgrind``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loadtest import bench_engine
from loadtest.bench_engine import BEGIN, END, ROWS, UNIT

pytestmark = pytest.mark.own_servers


def test_every_row_is_counted_and_written(tmp_path: Path) -> None:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    result = bench_engine.measure(
        os.environ.get("JSON_MODULE") or None, profiles=3, items=12, dumps=dumps
    )
    assert set(result.per_call) == set(ROWS)
    # --dumps: each row's callgrind dump, for callgrind_annotate
    kept = sorted(dumps.glob("*.out"))
    assert len(kept) == len(ROWS)
    assert all(p.read_text().startswith("# callgrind format") for p in kept)
    assert result.layout is not None  # the documents say which layout was measured
    assert result.per_call[UNIT] > 1_000
    script = result.per_call["EVALSHA of `return 1`"]
    floor = result.per_call["no-logic floor: EVALSHA, one JSON read, one JSON.SET"]
    assert floor > script
    # every write of the store enters a script, reads and writes: above the floor
    for row in ROWS[3:8]:
        assert result.per_call[row] > floor, row

    out = tmp_path / "engine.json"
    bench_engine.write_json(out, [result], 3, 12)
    written = json.loads(out.read_text())["engines"][result.engine]
    assert written["per_call"][UNIT] == round(result.per_call[UNIT])
    assert written["ratio"][UNIT] == 1.0

    doc = tmp_path / "speed.md"
    doc.write_text(f"# Speed\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    text = bench_engine.table([result], 3, 12)
    assert bench_engine.write_markdown(doc, text)
    assert bench_engine.write_markdown(doc, text)  # again: replaced, not added
    body = doc.read_text()
    assert body.count("| heartbeat on the front item |") == 1
    assert "old table" not in body
    assert body.endswith(f"{END}\n\nafter\n")
