"""The benchmark suite: gocachegate against Go's native cache, nginx and a peer helper, in one run.

``bench/run [--quick] [--json FILE] [--only NAME]``. Modules: ``runner`` (repetitions, ratios,
failures), ``report`` (Markdown and JSON), ``tools`` (installs), ``servers`` (every process on
loopback), ``backends`` (fresh stores and gates), ``gowork`` (Go workloads and the output check),
one module per scenario family (``builds``, ``trivial``, ``throughput``, ``peer``, ``cost``), and
``latency`` (the storage latency proxy), ``cli``.
"""
