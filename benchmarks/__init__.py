"""Gazette's benchmark suite: `python -m benchmarks.run [--full] [--only NAME]`.

Every scenario runs on loopback only (SMTP sink, Redis, PostgreSQL, the web server) and
reports the median, minimum and maximum of at least three runs.
"""
