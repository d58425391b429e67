"""The load test and the benchmarks (``python -m loadtest``, ``make loadtest``).

- ``models.py``: the three data models behind one interface (this store, a document per
  item plus sorted sets, a document per item plus search); their scripts in ``lua/``.
- ``workload.py``: the seeded workload, from devtools/heartbeats.py's catalogue.
- ``run.py``: the measures; ``report.py``: docs/benchmarks.md and its charts;
  ``capacity.py`` with ``data/memorydb_nodes.json``: MemoryDB sizing and cost.
- ``bench.py``, ``bench_filters.py``: the store's own numbers in the README (make bench,
  make bench-memory, make bench-filters).
"""
