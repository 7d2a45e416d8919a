"""What every scenario runs on: processes, servers, seeding, the latency proxy, timing, reports.

- ``context``: the sizes of a mode, the state one invocation shares, ``Scenario``.
- ``figures``: a figure (median, min, max of runs) and ``FigureTable.register``.
- ``processes``: free ports, child environments, process groups, Celery workers.
- ``servers``: the SMTP sink (Postfix's smtp-sink, or an aiosmtpd one).
- ``webload``: ``gazette serve`` on PostgreSQL, and wrk to load it.
- ``latency_proxy``: a TCP proxy that adds a round trip, run as its own program.
- ``seeding``: articles, readers, CSV files, fresh databases, bulk seeding.
- ``messages``: Gazette's messages pre-rendered for the ceiling and the sink.
- ``sending``: one issue sent end to end through real Celery workers.
- ``timing``: CPU and memory of processes and the machine, and a command timer.
- ``profiling``: py-spy profiles, summarised.
- ``report`` and ``plots``: latest.json, docs/benchmarks.md and the charts.
"""
