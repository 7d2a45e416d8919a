"""The benchmark harness at a small size: it completes and counts right (not speed).

The quick end-to-end scenario (gazette) at 2,000 readers on SQLite with real `celery worker`
processes on Redis, then the obvious approach on a few hundred messages, both into an
aiosmtpd server that records what it receives; then the JSON the run writes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import suite
from benchmarks.harness import report, seeding
from benchmarks.harness.context import QUICK, Context, Sizes
from benchmarks.harness.figures import figure as make_figure
from benchmarks.run import HARNESS_KEY
from tests.support.smtp import SMTPServer
from tests.support.workers import require_redis

pytestmark = pytest.mark.slow

READERS = 2_000
SAMPLE = 300


def _recipients(server: SMTPServer) -> Counter[str]:
    return Counter(r for message in server.messages for r in message.recipients)


@pytest.mark.timeout(900)
def test_bench_scenarios_send_every_message_once_and_report_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SMTPServer
) -> None:
    redis_url = require_redis()
    monkeypatch.setattr(seeding, "REDIS_URL", redis_url)
    # What the harness sets for itself, so importing a Celery app reads no installation.
    for key in ("GAZETTE_DATABASE_URL", "GAZETTE_BROKER_URL", "GAZETTE_SMTP_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GAZETTE_SECRET_KEYS", HARNESS_KEY)
    monkeypatch.setenv("GAZETTE_VAR_DIR", str(tmp_path / "harness"))
    sizes = Sizes(
        mode="quick", send=(), sqlite_send=(READERS,), obvious_send=(READERS,),
        obvious_sample=SAMPLE, ceiling_cap=READERS, corpus=100, sink_messages=100,
        planning=1_000, csv_rows=100, feed_items=10, web_seconds=1, web_readers=10,
        profile_size=100, dkim_send=READERS,
    )  # fmt: skip
    ctx = Context(
        sizes=sizes,
        workdir=tmp_path / "work",
        runs=1,
        databases=("sqlite",),
        obvious_databases=("sqlite",),
        profile=False,
        sink_url=smtp_server.url,
        sink_kind="aiosmtpd (tests.support.smtp)",
    )
    readers = [r.email for r in seeding.reader_rows(READERS)]

    suite.BY_NAME["gazette"].run(ctx)
    (gazette,) = ctx.send_runs
    assert (gazette.approach, gazette.database, gazette.sent) == ("gazette", "sqlite", READERS)
    # The unsigned run first, then the run with DKIM signing on: each reader once in each.
    unsigned, signed = smtp_server.messages[:READERS], smtp_server.messages[READERS:]
    for messages in (unsigned, signed):
        assert Counter(r for m in messages for r in m.recipients) == Counter(readers)
        assert all(len(m.recipients) == 1 for m in messages)
        assert len({m.parsed()["Message-ID"] for m in messages}) == READERS
    assert unsigned[0].parsed()["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert not any(m.parsed()["DKIM-Signature"] for m in unsigned)
    domain = seeding.FROM_ADDRESS.rpartition("@")[2]
    for message in signed:
        tags = dict(
            part.strip().split("=", 1)
            for part in str(message.parsed()["DKIM-Signature"]).split(";")
            if "=" in part
        )
        assert (tags["a"], tags["d"], tags["s"]) == ("rsa-sha256", domain, "bench")

    smtp_server.handler.messages.clear()
    suite.BY_NAME["obvious"].run(ctx)
    obvious = ctx.send_runs[-1]
    assert (obvious.approach, obvious.sent) == ("obvious", SAMPLE)
    # The sample is the first deliveries of the plan: the first readers, once each.
    assert _recipients(smtp_server) == Counter(readers[:SAMPLE])
    assert smtp_server.messages[0].parsed()["List-Unsubscribe"].startswith("<https://")

    results, markdown = tmp_path / "latest.json", tmp_path / "benchmarks.md"
    suite.write_outputs(
        ctx, ["gazette", "obvious"], partial=False, command="test", seconds=1.0,
        results=results, markdown=markdown, charts=tmp_path,
    )  # fmt: skip
    figures = {f["name"]: f for f in json.loads(results.read_text())}
    prefix = f"sqlite.n{READERS}"
    assert {name: f["unit"] for name, f in figures.items()} == {
        f"gazette.{prefix}.msgs_per_s": "msg/s",
        f"gazette.{prefix}.cpu_ms_per_msg": "CPU ms/msg",
        f"gazette.{prefix}.peak_rss_mb": "MB",
        f"gazette.{prefix}.plan_s": "s",
        f"gazette.{prefix}.machine_busy": "share",
        f"obvious.{prefix}.msgs_per_s": "msg/s",
        f"obvious.{prefix}.cpu_ms_per_msg": "CPU ms/msg",
        f"gazette.{prefix}.vs_obvious": "x",
        f"gazette.sqlite.dkim.n{READERS}.msgs_per_s": "msg/s",
        f"gazette.sqlite.dkim.n{READERS}.cpu_ms_per_msg": "CPU ms/msg",
        f"gazette.sqlite.dkim.n{READERS}.vs_unsigned": "x",
    }
    for figure in figures.values():
        assert {"name", "value", "unit", "min", "max", "runs"} <= set(figure)
        assert figure["runs"] == 1
        assert figure["min"] <= figure["value"] <= figure["max"]
    speedup = figures[f"gazette.{prefix}.vs_obvious"]
    assert speedup["numerator"] == f"gazette.{prefix}.msgs_per_s"
    assert speedup["denominator"] == f"obvious.{prefix}.msgs_per_s"
    assert speedup["value"] == pytest.approx(
        figures[speedup["numerator"]]["value"] / figures[speedup["denominator"]]["value"]
    )
    rate = figures[f"gazette.{prefix}.msgs_per_s"]["value"]
    assert rate == pytest.approx(gazette.rate)
    text = markdown.read_text()
    assert "| Gazette, sqlite, 2,000 subscribers: messages/s" in text
    assert "- SMTP sink: aiosmtpd (tests.support.smtp)" in text


def test_report_findings_read_only_the_figures_of_this_run(tmp_path: Path) -> None:
    ctx = Context(sizes=QUICK, workdir=tmp_path, log=lambda _text: None)
    suite.BY_NAME["csv"].figures.register(ctx, "rate", [20_000, 21_000, 22_000], rows=100_000)
    earlier = make_figure(
        "planning.postgresql.n1000000.plan_s", [26.0, 26.0, 26.0], "s",
        scenario="planning", label="Planning 1,000,000 active subscriptions, postgresql",
        subscribers=1_000_000,
    )  # fmt: skip
    earlier.recorded_at = "2026-01-01 00:00:00 UTC"
    info = report.RunInfo(mode="quick", command="test", started=ctx.started)
    path = tmp_path / "benchmarks.md"
    report.write_markdown([*ctx.figures.values(), earlier], info, suite.SUITE, {}, path)
    text = path.read_text()
    findings = text.split("## What limits it now")[1].split("## How each figure is measured")[0]
    assert "this run's figures only (csv); the other row of the table is from earlier" in findings
    assert "The one figure of this run with a target meets it." in findings
    assert "**CSV import.** 21,000 rows/s over the whole command." in findings
    assert "Planning" not in findings  # in the table, marked earlier, but not read
    assert "*(earlier quick run, 2026-01-01 00:00:00 UTC)*" in text


def test_relay_findings_show_the_curves_over_round_trips_and_connections() -> None:
    from benchmarks.scenarios import relay

    info = report.RunInfo(mode="full", command="test", started="2026-12-07 06:17:28 UTC")
    values = {
        "relay.rtt20.gazette.c1.msgs_per_s": 27.5,
        "relay.rtt20.gazette.c1.bound_msgs_per_s": 50.0,
        "relay.rtt20.gazette.c10.msgs_per_s": 390.0,
        "relay.rtt20.gazette.c10.bound_msgs_per_s": 500.0,
        "relay.rtt20.obvious.msgs_per_s": 12.3,
        "relay.rtt20.gazette.c20.msgs_per_s": 708.0,
        "relay.rtt20.gazette.c20.bound_msgs_per_s": 1000.0,
    }
    figures = []
    for name, value in values.items():
        one = make_figure(name, [value], "msg/s", scenario="relay", label=name)
        one.recorded_at = info.started
        figures.append(one)
    lines = relay.findings(figures, info)
    assert "| 20 ms | 390 | 12.3 | 500 | 78% |" in lines
    assert "At 20 ms, by SMTP connections per worker process (2 processes):" in lines
    assert [line for line in lines if line.startswith("| 1 |") or line.startswith("| 20 |")] == [
        "| 1 | 27.5 | 50.0 | 55% |",
        "| 20 | 708 | 1,000 | 71% |",
    ]
