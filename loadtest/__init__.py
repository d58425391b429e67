"""The load test and the benchmarks (``python -m loadtest``, ``make loadtest``).

- ``models.py``: the four data models behind one interface (this store, a document per
  item plus sorted sets, one hash of all items plus sorted sets, a document per item
  plus search); their scripts in ``lua/``.
- ``workload.py``: the seeded workload, from devtools/heartbeats.py's catalogue.
- ``run.py``: the measures; ``report.py``: docs/benchmarks.md and its charts;
  ``capacity.py`` with ``data/memorydb_nodes.json``: MemoryDB sizing and cost.
- ``bench.py``, ``bench_filters.py``: the store's own numbers in docs/ (make bench,
  make bench-memory, make bench-filters); ``bench_engine.py`` with ``callgrind.py``:
  instructions per call (make bench-engine); ``handlers.py``: the Lambda handlers end
  to end (make bench-handlers).
"""
