"""The benchmark harness (``make bench``, ``python -m enrich.bench``): our flow, measured side by
side with two yardsticks, reported as ratios.

Modules (nothing heavy is imported here, so ``python -m enrich.bench.plain_script`` starts as a
plain script would):

* :mod:`enrich.bench.harness`: the runs, their measurement, the medians, ratios and tables;
* :mod:`enrich.bench.yardsticks`: the bare Metaflow graph and the plain script, as commands;
* :mod:`enrich.bench.plain_script`: the plain-script yardstick itself (pyarrow, numpy, sqlite3);
* :mod:`enrich.bench.ledger`: the one read of our run's ledger (rows read, step durations);
* :mod:`enrich.bench.measure`: the small parent process that times each run and reads its peak
  memory with ``wait4``.
"""
