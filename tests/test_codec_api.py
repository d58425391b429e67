"""The read API's fast shaping (codec.item_to_api, serialize) says what the models say.

The pages and the changes feed are written straight from the stored arrays, without
building a HistoryItem per item. HistoryItem stays the schema: these tests
fail if the two ways ever disagree on any field, for any stored item, or if the body
text changes under orjson.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from watch_history.codec import (
    CHANGED_POSITION,
    DISMISSED_POSITION,
    ITEM_FIELDS,
    item_from_values,
    item_to_api,
    rfc3339_of_ms,
)
from watch_history.http_api import serialize
from watch_history.models import from_epoch_ms, rfc3339_ms

# Stored times: epoch ms from 1970 to the year 3000 (the API's bounds are inside).
times = st.integers(min_value=0, max_value=32_503_680_000_000 - 1)
ids = st.text("abcXYZ019._:-", min_size=1, max_size=12).filter(lambda s: s.strip("."))
seconds = st.one_of(
    st.integers(min_value=0, max_value=10_000_000),
    st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False),
)
maybe = st.one_of  # maybe(st.none(), x): a field that may be null


@st.composite
def stored_items(draw: st.DrawFn) -> list[Any]:
    """An item's values as the store decodes them: every field, then maybe the change
    stamp and, for a layout-3 item, maybe dismissedAt (after the stamp or a None for
    it); or, as written before stamps existed, with its trailing nulls left out."""
    values: list[Any] = [
        draw(ids),  # asset_id
        draw(times),  # last_watched_at
        draw(seconds),  # position
        draw(maybe(st.none(), seconds)),  # duration (0 is stored for none by old items)
        draw(times),  # first_watched_at
        draw(st.sampled_from([0, 1])),  # completed
        draw(maybe(st.none(), times)),  # completed_at
        draw(maybe(st.none(), ids)),  # device_id
        draw(maybe(st.none(), st.sampled_from(["match", "episode", "movie"]))),
        draw(maybe(st.none(), st.text(min_size=1, max_size=20))),  # title, any unicode
        draw(maybe(st.none(), ids)),  # sport
        draw(maybe(st.none(), ids)),  # series
        draw(maybe(st.none(), st.lists(ids, max_size=3))),  # teams
        draw(maybe(st.none(), ids)),  # show
        draw(maybe(st.none(), st.integers(0, 100_000))),  # season
        draw(maybe(st.none(), st.integers(0, 1_000_000))),  # episode
        draw(maybe(st.none(), times)),  # device_at (internal)
    ]
    assert len(values) == len(ITEM_FIELDS) == CHANGED_POSITION
    if draw(st.booleans()):
        values.append(draw(maybe(st.none(), st.integers(0, 10**6))))  # the change stamp
        if draw(st.booleans()):
            values.append(draw(times))  # dismissed_at
            assert len(values) == DISMISSED_POSITION + 1
    else:
        while values and values[-1] is None:
            values.pop()
    return values


@settings(max_examples=400)
@given(stored_items())
def test_an_item_shaped_from_its_array_is_what_the_model_dumps(values: list[Any]) -> None:
    expected = item_from_values(values).to_api()
    shaped = item_to_api(values)
    assert shaped == expected
    assert list(shaped) == list(expected)  # the same keys in the same order
    # the same numbers (floats below 1e-4 may be written in another notation: serialize)
    assert json.loads(serialize(shaped)) == expected
    if not any(isinstance(v, float) and 0 < v < 1e-4 for v in expected.values()):
        assert serialize(shaped) == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)


@settings(max_examples=2000)
@given(times)
def test_times_are_written_as_the_models_write_them(ms: int) -> None:
    assert rfc3339_of_ms(ms) == rfc3339_ms(from_epoch_ms(ms))


def test_serialize_keeps_what_orjson_refuses() -> None:
    """An int beyond 64 bits and a lone surrogate are written as the stdlib writes them."""
    assert serialize({"n": 2**70}) == '{"n":1180591620717411303424}'
    assert serialize({"t": "\ud800"}) == '{"t":"\ud800"}'
