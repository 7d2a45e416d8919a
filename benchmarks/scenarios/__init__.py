"""One module per scenario, named as ``python -m benchmarks.run --only NAME`` names it.

Each module declares its ``FIGURES`` table, how the figures are measured (``METHOD``),
``run(ctx)``, ``findings(figures, info)`` for the report, and ``SCENARIO`` bundling them;
benchmarks.suite lists them in running order. Modules here are only ever imported by
their full name (``benchmarks.scenarios.csv``), so ``csv`` and ``gazette`` do not stand in
for the standard library's or Gazette's own package.
"""
