"""The Runtime's dispatcher: in-process with no broker, the worker's Celery one with Redis.

The in-process dispatcher sends into the test installation's Maildir outbox; the Celery
one is found through its entry point and its tasks are read back from the real Redis
queue, where a worker would take them.
"""

from __future__ import annotations

import json
from pathlib import Path

import redis

from gazette.config import load_settings
from gazette.dispatch import InProcessDispatcher
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime, build_runtime, use_runtime
from gazette.store import migrate
from gazette.store.db import transaction
from gazette.store.models import DeliveryStatus, Issue, IssueStatus
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.digests import (
    SLUG,
    ArticleSpec,
    add_articles,
    add_readers,
    deliveries,
    maildir_messages,
    plan,
)
from tests.support.env import make_env
from tests.support.messages import parse
from tests.support.workers import require_redis


def _issue(runtime: Runtime, readers: int) -> int:
    """A newsletter with one article and ``readers`` confirmed readers; its planned issue."""
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, SLUG, "Test Weekly")
    add_articles(runtime, [ArticleSpec("First", "https://example.org/first", hours_ago=2)])
    add_readers(runtime, [(f"r{n}@example.org", f"Reader {n}", "en") for n in range(readers)])
    issue_id, _public_id, _status = plan(runtime, newsletter_id)
    return issue_id


def _sent(runtime: Runtime, issue_id: int) -> int:
    rows = deliveries(runtime, issue_id).values()
    return sum(row.status == DeliveryStatus.SENT for row in rows)


def test_without_a_broker_the_issue_is_sent_before_enqueue_returns(runtime: Runtime) -> None:
    assert isinstance(runtime.dispatcher, InProcessDispatcher)
    issue_id = _issue(runtime, readers=3)

    assert runtime.dispatcher.enqueue_issue(issue_id) == 1
    assert _sent(runtime, issue_id) == 3
    with runtime.sessions() as session:
        assert session.get_one(Issue, issue_id).status == IssueStatus.SENT
    recipients = sorted(str(parse(m)["To"]) for m in maildir_messages(runtime))
    assert recipients == [f"Reader {n} <r{n}@example.org>" for n in range(3)]
    # Dispatching again finds nothing pending and sends nothing twice.
    assert runtime.dispatcher.enqueue_issue(issue_id) == 0
    assert len(maildir_messages(runtime)) == 3


def test_without_a_broker_a_confirmation_is_sent_in_process(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        create_newsletter(session, SLUG, "Test Weekly")
        result = subscribe(session, "ada@example.org", SLUG, Origin("web"), name="Ada")
    assert result.needs_confirmation

    runtime.dispatcher.send_confirmation(result.subscriber_id, result.newsletter_id)

    [raw] = maildir_messages(runtime)
    message = parse(raw)
    assert message["To"] == "Ada <ada@example.org>"
    assert "/confirm/" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_with_a_broker_tasks_go_to_the_redis_queue_for_workers(
    tmp_path: Path, database_url: str
) -> None:
    env = make_env(tmp_path, database_url, broker_url=require_redis(), batch_size="2")
    settings = load_settings(env, cwd=tmp_path)
    built = build_runtime(settings)
    migrate.upgrade(built.engine)
    use_runtime(built)
    queue = redis.Redis.from_url(require_redis())
    try:
        # Found through the `gazette.dispatchers` entry point, never imported by gazette.
        assert type(built.dispatcher).__module__ == "worker.dispatch"
        issue_id = _issue(built, readers=5)

        assert built.dispatcher.enqueue_issue(issue_id) == 3
        # Nothing was sent here: three send tasks wait on this installation's queue.
        assert _sent(built, issue_id) == 0
        waiting = [json.loads(raw) for raw in queue.lrange(settings.queue, 0, -1)]
        assert sorted(m["headers"]["task"] for m in waiting) == ["gazette.send_batch"] * 3
    finally:
        queue.delete(settings.queue)
        queue.close()
        use_runtime(None)
