"""A paused newsletter on a real Redis broker and a real `celery worker`: no batch claims a row.

The batches are enqueued while the newsletter is paused; the worker runs each
send_batch task, whose claim (one conditional UPDATE that also checks the pause) takes
nothing, so nothing reaches the SMTP server. After `resume` the same issue goes out,
every reader once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from gazette.config import load_settings
from gazette.newsletters.pausing import resume
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Issue, Newsletter, utcnow
from tests.support.env import install, make_env
from tests.support.smtp import SMTPServer, by_recipient
from tests.support.workers import Worker, require_redis, wait_for
from tests.test_worker import seed, sent

pytestmark = pytest.mark.slow
READERS = 30


@pytest.fixture
def broker_env(tmp_path: Path, database_url: str, smtp_server: SMTPServer) -> dict[str, str]:
    return make_env(
        tmp_path, database_url, broker_url=require_redis(), smtp_url=smtp_server.url,
        batch_size="10",
    )  # fmt: skip


@pytest.fixture
def broker_runtime(tmp_path: Path, broker_env: dict[str, str]) -> Iterator[Runtime]:
    with install(load_settings(broker_env, cwd=tmp_path)) as built:
        yield built


def _succeeded(log: Path) -> int:
    """How many send_batch tasks the worker's log says finished."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return sum(1 for line in lines if "gazette.send_batch[" in line and "succeeded in" in line)


def test_no_batch_claims_a_row_while_paused_and_all_go_out_after_resume(
    tmp_path: Path, broker_env: dict[str, str], broker_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    from worker.tasks import enqueue_issue

    issue_id = seed(broker_runtime, READERS)
    with transaction(broker_runtime.sessions) as session:
        newsletter_id = session.get_one(Issue, issue_id).newsletter_id
        session.execute(
            update(Newsletter)
            .where(Newsletter.id == newsletter_id)
            .values(paused_at=utcnow(), pause_reason="a test's pause")
        )
    log = tmp_path / "worker.log"
    worker = Worker(broker_env, log)
    try:
        assert enqueue_issue(issue_id) == 3
        wait_for(lambda: _succeeded(log) >= 3, 60, "three send_batch tasks to finish")
        assert sent(broker_runtime, issue_id) == 0
        assert smtp_server.messages == []
        with transaction(broker_runtime.sessions) as session:
            assert resume(session, newsletter_id, utcnow()) == "a test's pause"
        assert enqueue_issue(issue_id) == 3
        wait_for(lambda: sent(broker_runtime, issue_id) == READERS, 60, "every row sent")
        wait_for(lambda: len(smtp_server.messages) == READERS, 30, "every message at the relay")
    finally:
        worker.stop()
    assert set(by_recipient(smtp_server.messages).values()) == {1}
