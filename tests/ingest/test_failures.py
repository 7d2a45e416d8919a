"""Failing feeds: cut-off documents, errors, redirects, slow and huge answers, each recorded."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from gazette.articles.feeds import IngestResult, due_feeds, poll_feed
from gazette.articles.fetch import MAX_REDIRECTS
from gazette.runtime import Runtime
from tests.ingest.helpers import (
    CUT_AFTER_ITEMS,
    CUT_IN_HEADER,
    CUT_IN_ITEM,
    FAST,
    GOOD,
    MB,
    WORDPRESS,
    article_count,
    feed_row,
    one_sentence,
    register,
    simple_feed,
    stored,
)
from tests.support.feedserver import BIG, Fail, FeedServer, Redirect


def test_malformed_feed_records_a_reason_and_the_others_still_ingest(
    runtime: Runtime, feeds: FeedServer
) -> None:
    from worker import tasks

    bad = register(runtime, feeds.static("/bad.xml", CUT_IN_HEADER))
    good = register(runtime, feeds.static("/good.xml", GOOD))

    tasks.poll_due_feeds()  # the worker's beat task: polls every due feed, bad one first

    bad_feed, good_feed = feed_row(runtime, bad), feed_row(runtime, good)
    reason = one_sentence(bad_feed.last_error)
    assert bad_feed.url in reason
    assert "RSS or Atom" in reason
    assert bad_feed.last_polled_at is not None
    assert good_feed.last_error is None
    articles = stored(runtime)
    assert [a.title for a in articles] == ["Story 1", "Story 2"]
    assert {a.feed_id for a in articles} == {good}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(CUT_IN_ITEM, id="cut-inside-the-first-item"),
        pytest.param(CUT_AFTER_ITEMS, id="cut-after-complete-items"),
    ],
)
def test_truncated_feed_stores_nothing_and_says_why(
    runtime: Runtime, feeds: FeedServer, document: bytes
) -> None:
    feed_id = register(runtime, feeds.static("/truncated.xml", document))

    result = poll_feed(runtime.sessions, feed_id)

    reason = one_sentence(feed_row(runtime, feed_id).last_error)
    assert result.error == reason
    assert result.ingest is None
    assert article_count(runtime) == 0


@pytest.mark.parametrize("validators", ["etag", "last-modified", "both"])
def test_unchanged_feed_is_a_304_and_stores_nothing(
    runtime: Runtime, feeds: FeedServer, validators: str
) -> None:
    etag = '"v1-5f2a"' if validators in ("etag", "both") else None
    modified = "Wed, 18 Nov 2026 10:12:45 GMT" if validators != "etag" else None
    url = feeds.static("/cond.xml", simple_feed(2), etag=etag, last_modified=modified)
    feed_id = register(runtime, url)

    first = poll_feed(runtime.sessions, feed_id)
    assert first.ingest == IngestResult(2, 0, 0, 0)
    assert not first.not_modified
    feed = feed_row(runtime, feed_id)
    assert (feed.etag, feed.last_modified) == (etag, modified)
    polled_first = feed.last_polled_at
    ids = [a.id for a in stored(runtime)]

    second = poll_feed(runtime.sessions, feed_id)

    one, two = feeds.requests("/cond.xml")
    assert "if-none-match" not in one.headers
    assert "if-modified-since" not in one.headers
    assert two.headers.get("if-none-match") == etag
    assert two.headers.get("if-modified-since") == modified
    assert two.status == 304
    assert second.not_modified
    assert second.ingest is None
    assert second.error is None
    assert "not modified" in second.summary()
    assert [a.id for a in stored(runtime)] == ids
    feed = feed_row(runtime, feed_id)
    assert (feed.etag, feed.last_modified, feed.last_error) == (etag, modified, None)
    assert polled_first is not None
    assert feed.last_polled_at is not None
    assert feed.last_polled_at >= polled_first

    # When the feed does change, the new validators are kept and the new item stored.
    new_etag = '"v2-77c1"' if etag else None
    new_modified = "Thu, 19 Nov 2026 08:00:00 GMT" if modified else None
    feeds.static("/cond.xml", simple_feed(3), etag=new_etag, last_modified=new_modified)
    third = poll_feed(runtime.sessions, feed_id)
    assert third.ingest == IngestResult(1, 0, 2, 0)
    feed = feed_row(runtime, feed_id)
    assert (feed.etag, feed.last_modified) == (new_etag, new_modified)


@pytest.mark.parametrize("server", ["no-validators", "validators-ignored"])
def test_polling_twice_without_304_stores_nothing_new(
    runtime: Runtime, feeds: FeedServer, server: str
) -> None:
    if server == "no-validators":
        url = feeds.static("/plain.xml", WORDPRESS.encode())
    else:
        url = feeds.static("/plain.xml", WORDPRESS.encode(), etag='"abc"', honour_conditional=False)
    feed_id = register(runtime, url, topic="Harbour")

    first = poll_feed(runtime.sessions, feed_id)
    before = [(a.id, a.title, a.summary, a.published_at) for a in stored(runtime)]
    second = poll_feed(runtime.sessions, feed_id)

    assert first.ingest == IngestResult(2, 0, 0, 0)
    assert second.ingest == IngestResult(0, 0, 2, 0)
    assert not second.not_modified
    assert [r.status for r in feeds.requests("/plain.xml")] == [200, 200]
    assert [(a.id, a.title, a.summary, a.published_at) for a in stored(runtime)] == before


def test_a_moved_feed_is_followed(runtime: Runtime, feeds: FeedServer) -> None:
    feeds.static("/new-home.xml", simple_feed(1))
    url = feeds.route("/old-home.xml", Redirect("/new-home.xml", status=301))
    result = poll_feed(runtime.sessions, register(runtime, url))
    assert result.ingest == IngestResult(1, 0, 0, 0)


def test_redirect_loop_is_an_error_naming_redirects(runtime: Runtime, feeds: FeedServer) -> None:
    feed_id = register(runtime, feeds.url("/loop"))

    result = poll_feed(runtime.sessions, feed_id, FAST)

    reason = one_sentence(result.error)
    assert "redirect" in reason.lower()
    assert str(MAX_REDIRECTS) in reason
    assert feed_row(runtime, feed_id).last_error == reason
    hops = len(feeds.requests("/loop")) + len(feeds.requests("/loop2"))
    assert MAX_REDIRECTS <= hops <= MAX_REDIRECTS + 1
    assert article_count(runtime) == 0


def test_50_mb_response_is_refused_without_reading_it_all(
    runtime: Runtime, feeds: FeedServer
) -> None:
    feed_id = register(runtime, feeds.url("/big"))

    tracemalloc.start()
    try:
        result = poll_feed(runtime.sessions, feed_id, FAST)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    reason = one_sentence(result.error)
    assert "10 MB limit" in reason
    assert feed_row(runtime, feed_id).last_error == reason
    [request] = feeds.settle("/big")
    assert request.status == -1  # the client hung up mid-body
    assert feeds.bytes_sent("/big") < 25 * MB < BIG
    assert peak < 25 * MB, f"peak {peak / MB:.1f} MB"
    assert article_count(runtime) == 0


def test_declared_50_mb_response_is_refused_before_the_body(
    runtime: Runtime, feeds: FeedServer
) -> None:
    feed_id = register(runtime, feeds.url("/big-declared"))

    result = poll_feed(runtime.sessions, feed_id, FAST)

    reason = one_sentence(result.error)
    assert "over the 10 MB limit" in reason
    feeds.settle("/big-declared")
    assert feeds.bytes_sent("/big-declared") < 10 * MB


def test_server_error_is_recorded_with_its_status(runtime: Runtime, feeds: FeedServer) -> None:
    feed_id = register(runtime, feeds.url("/error"))

    result = poll_feed(runtime.sessions, feed_id, FAST)

    reason = one_sentence(result.error)
    assert "HTTP 500" in reason
    # The reason names the URL; the poll's line does not say it a second time.
    assert result.summary() == f"Feed {feed_id} failed: {reason}"
    assert result.summary().count(feeds.url("/error")) == 1
    assert feed_row(runtime, feed_id).last_error == reason


def test_slow_server_times_out(runtime: Runtime, feeds: FeedServer) -> None:
    feed_id = register(runtime, feeds.url("/slow"))

    result = poll_feed(runtime.sessions, feed_id, FAST)

    reason = one_sentence(result.error)
    assert "time limit" in reason
    # The route answers after 5 s: the poll gave up while the server was still waiting.
    [request] = feeds.requests("/slow")
    assert (request.status, request.finished.is_set()) == (0, False)
    assert feed_row(runtime, feed_id).last_error == reason


def test_an_error_is_cleared_by_the_next_good_poll(runtime: Runtime, feeds: FeedServer) -> None:
    url = feeds.route("/flaky.xml", Fail(503))
    feed_id = register(runtime, url)
    assert poll_feed(runtime.sessions, feed_id, FAST).error
    assert feed_row(runtime, feed_id).last_error

    feeds.static("/flaky.xml", simple_feed(1))
    assert poll_feed(runtime.sessions, feed_id, FAST).ingest == IngestResult(1, 0, 0, 0)
    assert feed_row(runtime, feed_id).last_error is None


def test_feed_topic_is_given_to_every_article(runtime: Runtime, feeds: FeedServer) -> None:
    with_topic = register(runtime, feeds.static("/wp.xml", WORDPRESS.encode()), topic="Research")
    without = register(runtime, feeds.static("/plain.xml", simple_feed(1, "plain.example.org")))

    poll_feed(runtime.sessions, with_topic)
    poll_feed(runtime.sessions, without)

    slugs = [(a.feed_id, {t.slug for t in a.topics}) for a in stored(runtime)]
    assert slugs == [
        (with_topic, {"research", "transport", "harbour-life"}),
        (with_topic, {"research", "harbour-life"}),
        (without, set()),
    ]


def test_due_feeds_returns_a_feed_again_only_after_its_interval(
    runtime: Runtime, feeds: FeedServer
) -> None:
    from worker import tasks

    quarter = register(runtime, feeds.static("/a.xml", simple_feed(1, "a.example.org")))
    hourly = register(
        runtime,
        feeds.static("/b.xml", simple_feed(1, "b.example.org")),
        interval_minutes=60,
    )
    broken = register(runtime, feeds.url("/error"))
    with runtime.sessions() as session:
        assert due_feeds(session, datetime.now(UTC)) == [quarter, hourly, broken]

    tasks.poll_due_feeds()
    tasks.poll_due_feeds()  # a minute later, say: nothing is due again yet

    for path in ("/a.xml", "/b.xml", "/error"):
        assert len(feeds.requests(path)) == 1, path  # a failing feed is not hammered
    polled = {i: feed_row(runtime, i).last_polled_at for i in (quarter, hourly, broken)}
    assert all(polled.values())
    start = max(p for p in polled.values() if p is not None)
    with runtime.sessions() as session:
        assert due_feeds(session, start) == []
        assert due_feeds(session, start + timedelta(minutes=14, seconds=59)) == []
        assert due_feeds(session, start + timedelta(minutes=15)) == [quarter, broken]
        assert due_feeds(session, start + timedelta(minutes=60)) == [quarter, hourly, broken]
