"""Scenarios 1 and 2: the broker lost mid-issue, then back; nothing lost, nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from gazette.store.models import DeliveryStatus
from tests.reliability.helpers import broker_outage, check_outage
from tests.support.figures import record
from tests.support.reliability import duplicates, scenario

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability


@pytest.mark.slow
def test_reliability_redis_restarted_mid_issue(tmp_path: Path, database_url: str) -> None:
    outage = broker_outage(tmp_path, database_url, "restart")
    sending = outage.at_outage[DeliveryStatus.SENDING]
    reconnected = outage.worker_log.count(b"Connected to redis://") >= 2
    check_outage(outage)
    assert reconnected, "the worker did not reconnect to the restarted Redis"
    record(
        scenario("Redis restarted mid-issue", database_url),
        f"{outage.readers:,} deliveries through a real worker; the private Redis was killed "
        "with SIGKILL a third of the way in and started again on the same port a second "
        "later; the sweep was enqueued until the issue was sent",
        f"{outage.lost} lost, {duplicates(outage.received)} duplicate(s); {sending} row(s) "
        f"sending and {outage.queued_at_outage} queued task(s) lost at the restart; the "
        f"worker {'reconnected' if reconnected else 'did not reconnect'}; recovered in "
        f"{outage.recovery:.1f} s",
        f"0 lost; duplicates <= rows sending at the restart ({sending})",
    )


@pytest.mark.slow
def test_reliability_redis_flushed_mid_issue(tmp_path: Path, database_url: str) -> None:
    outage = broker_outage(tmp_path, database_url, "flush")
    sending = outage.at_outage[DeliveryStatus.SENDING]
    check_outage(outage)
    record(
        scenario("Redis flushed mid-issue", database_url),
        f"{outage.readers:,} deliveries through a real worker; FLUSHALL on the private "
        "Redis a third of the way in; the sweep was enqueued until the issue was sent",
        f"{outage.lost} lost, {duplicates(outage.received)} duplicate(s); "
        f"{outage.at_outage[DeliveryStatus.PENDING]:,} pending row(s) and "
        f"{outage.queued_at_outage} queued task(s) flushed away; recovered in "
        f"{outage.recovery:.1f} s",
        f"0 lost; duplicates <= rows sending at the flush ({sending})",
    )
