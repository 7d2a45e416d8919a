"""Reliability scenarios for issue 16: no reader lost to the relay, no side doors.

A relay that refuses the login, the sender or the connection, through the real
`gazette digest send --now --wait`; per-recipient replies sorted by their enhanced
status codes; every route of the URL map asked with every method but POST behind a real
HTTP server; one mailbox in many spellings through the web form, a CSV import and the
CLI; a seeded fuzz of names and addresses through the terminal, the CSV export and
message headers; and the operator's usual mistakes through the real CLI.

Each scenario asserts its bound and records its figure (tests.figures) once per
database; the checks themselves come from the issue's own test modules, imported.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from gazette.runtime import Runtime
from gazette.store.models import DeliveryStatus, Subscriber, SubscriptionStatus
from tests.support.cli import Cli, _not_utf8, write_csv
from tests.support.env import installed_runtime, make_env
from tests.support.feedserver import dead_port_url
from tests.support.figures import record
from tests.support.hostile import (
    add,
    address_from,
    check_cli_output,
    check_csv_export,
    check_message_headers,
    domains,
    local_parts,
    names,
)
from tests.support.relays import (
    PASSWORD,
    USER,
    AuthRelay,
    Relay,
    bounce_events,
    make_installation,
    one_sentence,
    readers,
)
from tests.support.reliability import address, backoff_over, scenario
from tests.support.routes import SAFE_AND_OTHER, Seeded, database_state, probe_every_route
from tests.support.smtp import SMTPServer, by_recipient
from tests.support.web import SLUG as WEB_SLUG
from tests.support.web import SPELLINGS, Site, SiteFactory, confirm_path

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability

State = dict[str, list[tuple[Any, ...]]]


def rows_changed(before: State, after: State) -> int:
    """Rows added, removed or changed between two whole-database states, over all tables."""
    changed = 0
    for table in before.keys() | after.keys():
        old, new = Counter(before.get(table, [])), Counter(after.get(table, []))
        changed += max((old - new).total(), (new - old).total())
    return changed


# == the relay refuses the session: the relay's problem, not the readers' =================

SESSION_READERS = 30
REFUSED_SENDER = "554 5.7.1 <digest@news.example.org>: Sender address rejected"
SESSION_REFUSALS = {
    "login": ("refuses the login (535 5.7.8 to AUTH)", "535 5.7.8"),
    "sender": ("refuses MAIL FROM (554 5.7.1)", REFUSED_SENDER),
    "connection": ("refuses the connection (nothing listens on its port)", "Connection refused"),
}


@pytest.mark.parametrize("refusal", list(SESSION_REFUSALS))
def test_reliability_relay_refuses_the_session(
    tmp_path: Path, database_url: str, refusal: str
) -> None:
    emails = [address(n) for n in range(SESSION_READERS)]
    site = make_installation(tmp_path, database_url, emails)
    relay = Relay(mail_reply=REFUSED_SENDER if refusal == "sender" else None)
    server = AuthRelay(relay) if refusal == "login" else SMTPServer(relay)
    broken = fixed = server.url
    if refusal == "login":
        broken = f"smtp://{USER}:wrongpass@127.0.0.1:{server.port}"
        fixed = f"smtp://{USER}:{PASSWORD}@127.0.0.1:{server.port}"
    if refusal != "connection":
        server.start()
    try:
        result = site.send(broken)
        held = readers(site)
        events_while_refused = bounce_events(site)
        # The operator fixes the password, the sender, or starts the relay; the backoff
        # runs out and beat's sweep sends what waited.
        relay.mail_reply = None
        if refusal == "connection":
            server.start()
        with site.runtime(fixed) as runtime:
            from worker.tasks import sweep

            moved = backoff_over(runtime)
            sweep()
    finally:
        server.stop()
    final = readers(site)
    received = by_recipient(relay.messages)
    line = one_sentence(result)  # exit 1, one line, no traceback
    what, words = SESSION_REFUSALS[refusal]
    assert words in line, line
    assert "wrongpass" not in result.stdout + result.stderr
    bounced = sum(
        r.subscription != SubscriptionStatus.ACTIVE or r.bounce_count for r in held.values()
    )
    waiting = sum(r.delivery == DeliveryStatus.PENDING and r.retry_later for r in held.values())
    assert (bounced, events_while_refused) == (0, 0)
    assert waiting == SESSION_READERS
    assert moved == SESSION_READERS
    assert received == Counter(emails)
    assert {r.delivery for r in final.values()} == {DeliveryStatus.SENT}
    assert {r.subscription for r in final.values()} == {SubscriptionStatus.ACTIVE}
    record(
        scenario(f"Relay {what}", database_url),
        f"`gazette digest send weekly --now --wait` to {SESSION_READERS} readers while a "
        f"loopback relay {what}; then the relay was put right, the backoff moved into the "
        "past and the sweep run",
        f"exit {result.returncode} with the relay's words; {bounced} reader(s) bounced, "
        f"{waiting} of {SESSION_READERS} pending with a backoff; after the sweep "
        f"{len(received)} reader(s) got {sum(received.values())} message(s), "
        f"{max(received.values()) if received else 0} at most each",
        "exit non-zero; 0 bounced; every row pending; each reader exactly once after",
    )


# == replies about one reader: the enhanced status code decides ===========================


def test_reliability_per_recipient_replies(tmp_path: Path, database_url: str) -> None:
    from worker.tasks import sweep

    group = 10
    dead = [address(n) for n in range(group)]
    policy = [address(n) for n in range(group, 2 * group)]
    deferred = [address(n) for n in range(2 * group, 3 * group)]
    healthy = [address(n) for n in range(3 * group, 4 * group)]
    rcpts: Counter[str] = Counter()

    def reply(recipient: str, _count: int) -> str | None:
        rcpts[recipient] += 1
        if recipient in dead:
            return f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown"
        if recipient in policy:
            return "550 5.7.1 Recipient address rejected: Access denied"
        if recipient in deferred and rcpts[recipient] == 1:
            return "451 4.7.1 Greylisted, try again later"
        return None

    site = make_installation(tmp_path, database_url, [*dead, *policy, *deferred, *healthy])
    relay = Relay(rcpt_script=reply)
    with SMTPServer(relay) as server:
        result = site.send(server.url)
        first = readers(site)
        with site.runtime(server.url) as runtime:
            backoff_over(runtime)
            sweep()
    final = readers(site)
    received = by_recipient(relay.messages)
    bounced = {e for e, r in final.items() if r.subscription == SubscriptionStatus.BOUNCED}
    failed_quietly = {
        e for e, r in final.items()
        if r.delivery == DeliveryStatus.FAILED and r.subscription == SubscriptionStatus.ACTIVE
        and r.bounce_count == 0
    }  # fmt: skip
    retried = {e for e, r in first.items() if r.delivery == DeliveryStatus.PENDING}
    assert result.returncode == 0, result.stderr
    assert bounced == set(dead)
    assert failed_quietly == set(policy)
    assert retried == set(deferred)
    assert received == Counter([*deferred, *healthy])
    # Neither a dead mailbox nor a policy refusal is asked again.
    assert {rcpts[e] for e in [*dead, *policy]} == {1}
    record(
        scenario("Per-recipient replies", database_url),
        f"`gazette digest send --now --wait` to {4 * group} readers: 550 5.1.1 for {group}, "
        f"550 5.7.1 for {group}, 451 4.7.1 once for {group}, {group} accepted; then the "
        "backoff was moved into the past and the sweep run",
        f"exit {result.returncode}; {len(bounced)} bounced (all of them 5.1.1), "
        f"{len(failed_quietly)} failed without a bounce (5.7.1), {len(retried)} retried and "
        f"delivered; {sum(received.values())} message(s) for {len(received)} reader(s)",
        "only the 5.1.1 readers bounced; 5.7.1 failed and kept; 4xx delivered once",
    )


# == only POST changes state ===============================================================


def test_reliability_no_method_but_post_changes_state(
    seeded: Seeded,
    database_url: str,
) -> None:
    probe = probe_every_route(seeded)
    changed = rows_changed(probe.before, probe.after)
    answers = Counter(f"{method} {status}" for (_r, method, _a), status in probe.answered.items())
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))
    server_errors = sum(status >= 500 for status in probe.answered.values())
    assert (changed, probe.mails, server_errors) == (0, 0, 0)
    assert probe.requests == len(probe.rules) * len(SAFE_AND_OTHER) * 2
    after_post = probe.post_that_acts(seeded)
    by_post = rows_changed(probe.before, after_post)
    assert by_post > 0
    record(
        scenario("Every route, every method but POST", database_url),
        f"{len(probe.rules)} routes of the URL map ({len({r.rule for r in probe.rules})} "
        f"paths) x {', '.join(SAFE_AND_OTHER)} x 2 actions, "
        "each with a valid token, the CSRF cookie and field, the one-click field and an "
        "address, over HTTP to the WSGI app; then one POST of the same fields",
        f"{probe.requests} requests (by method and status, per path and action: {statuses}); "
        f"{changed} row(s) changed, {probe.mails} mail(s) written; the POST changed {by_post} "
        "row(s)",
        "0 rows changed, 0 mails, 0 server errors; the POST changes state",
    )


# == one mailbox, many spellings ==========================================================


def test_reliability_one_mailbox_many_spellings(
    tmp_path: Path,
    database_url: str,
    make_site: SiteFactory,
) -> None:
    site: Site = make_site()
    cli = Cli(tmp_path, make_env(tmp_path, database_url, smtp_url=site.smtp.url), database_url)
    browser = site.browser()
    form = browser.get("/subscribe").form("/subscribe")
    for spelling in SPELLINGS:
        page = browser.post("/subscribe", form.filled(email=spelling))
        assert page.status == 200, (spelling, page.text)
    confirmations = len(site.smtp.messages)
    (mail,) = site.smtp.messages
    path = confirm_path(mail)
    assert browser.submit(browser.get(path).form(path)).status == 200
    # Confirming sends the welcome; every later sign-up of the mailbox must send nothing.
    welcomes = len(site.smtp.messages) - confirmations
    rows = [["email", "name"], *([spelling, "Mailbox"] for spelling in SPELLINGS)]
    cli.ok("subscribers", "import", str(write_csv(tmp_path / "spellings.csv", rows)),
           "--newsletter", WEB_SLUG, "--confirmed")  # fmt: skip
    for spelling in SPELLINGS:
        cli.ok("subscribers", "add", spelling, "--newsletter", WEB_SLUG, "--confirmed")
    cli.ok("articles", "add", "--title", "Harbour news", "--url", "https://example.org/harbour")
    cli.ok("digest", "send", WEB_SLUG, "--now", "--wait")
    with cli.session() as session:
        stored = list(session.scalars(select(Subscriber.email)))
    digests = Counter(
        r for m in site.smtp.messages[confirmations + welcomes :] for r in m.recipients
    )
    assert stored == [SPELLINGS[0]]
    assert (confirmations, welcomes) == (1, 1)
    assert digests == Counter({SPELLINGS[0]: 1})
    record(
        scenario("One mailbox, many spellings", database_url),
        f"one mailbox in {len(SPELLINGS)} spellings (letter case, a full-width domain) "
        "through the subscribe form, a CSV import and `gazette subscribers add`, then "
        "`gazette digest send --now --wait`",
        f"{3 * len(SPELLINGS)} sign-ups made {len(stored)} reader(s); {confirmations} "
        f"confirmation mail(s), {welcomes} welcome(s); {sum(digests.values())} message(s) "
        "of the issue to the mailbox",
        "1 reader; 1 confirmation; 1 welcome; 1 message per issue",
    )


# == names and addresses stay data ========================================================

FUZZ_EXAMPLES = 100


def test_reliability_injection_fuzz(
    runtime: Runtime,
    installation: dict[str, str],
    database_url: str,
) -> None:
    """Seeded: the same names and addresses each run, so the figure can be compared."""
    tried: Counter[str] = Counter()
    found: list[tuple[str, str, str, str]] = []

    def check(channel: str, name: str, address: str, run: Callable[[], None]) -> None:
        tried[channel] += 1
        try:
            run()
        except AssertionError as error:
            found.append((channel, name, address, str(error)[:200]))

    @settings(
        max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )  # fmt: skip
    @given(name=names, local=local_parts, domain=domains)
    def one(name: str, local: tuple[str, str], domain: str) -> None:
        email = address_from(*local, domain)
        stored = add(runtime, email, name)
        check(
            "terminal", name, email, lambda: check_cli_output(runtime, installation, email, stored)
        )
        check("CSV export", name, email, lambda: check_csv_export(runtime, email, stored))
        check("message headers", name, email, lambda: check_message_headers(name, email))

    one()
    assert found == [], found[:3]
    with runtime.sessions() as session:
        readers_stored = session.scalar(select(func.count()).select_from(Subscriber)) or 0
    record(
        scenario("Injection fuzz", database_url),
        f"{FUZZ_EXAMPLES} seeded hypothesis examples of names (console markup, formula "
        "starters, line breaks, terminal escapes, bidi overrides, header text, any Unicode) "
        "and addresses (formula starters, internationalised) through `gazette subscribers "
        "show`/`list`, the CSV export and a built message's headers",
        f"{sum(tried.values())} cases tried ({', '.join(f'{k}: {v}' for k, v in tried.items())}) "
        f"over {readers_stored} stored readers; {len(found)} injection(s) found",
        "0 markup, formula or header injections",
    )


# == operator errors =======================================================================

# (what, arguments, extra GAZETTE_* settings, the value the sentence must name)
MISTAKES: list[tuple[str, list[str], dict[str, str], str]] = [
    ("bad address", ["subscribers", "add", "not-an-address", "--confirmed"], {},
     "not-an-address"),
    ("unknown reader", ["subscribers", "unbounce", "nobody@example.org"], {},
     "nobody@example.org"),
    ("bad CSV row", ["subscribers", "import", "{folder}/latin1.csv", "--confirmed"], {},
     "line 3"),
    ("feed URL not HTTP", ["feeds", "add", "ftp://feeds.example.org/feed.xml"], {},
     "ftp://feeds.example.org/feed.xml"),
    ("feed URL on a dead port", ["feeds", "add", "{dead}"], {}, "{dead}"),
    ("unknown feed id", ["feeds", "poll", "999"], {}, "999"),
    ("unknown issue id", ["digest", "status", "999"], {}, "999"),
    ("unknown newsletter", ["digest", "send", "no-such-letter", "--now"], {}, "no-such-letter"),
    ("unknown topic", ["newsletters", "edit", "weekly", "--topic", "NoSuchTopic"], {},
     "NoSuchTopic"),
    ("bad sender option", ["newsletters", "edit", "weekly", "--from-address", "not an email"],
     {}, "not an email"),
    ("bad sender setting", ["digest", "status"], {"from_address": "not an email"},
     "not an email"),
    ("example signing key", ["digest", "status"],
     {"secret_keys": "change-me-to-a-long-random-string"}, "change-me-to-a-long-random-string"),
    ("short signing key", ["digest", "status"], {"secret_keys": "short"}, "SECRET_KEYS"),
]  # fmt: skip


def test_reliability_operator_errors(tmp_path: Path, database_url: str) -> None:
    env = make_env(tmp_path, database_url)
    cli = Cli(tmp_path, env, database_url)
    cli.ok("init")
    cli.ok("newsletters", "add", "weekly", "--name", "Weekly")
    cli.ok("subscribers", "add", "ada@example.org", "--confirmed")
    (tmp_path / "latin1.csv").write_bytes(_not_utf8(3)[0])
    dead = dead_port_url()
    with installed_runtime(tmp_path, database_url) as runtime:
        before = database_state(runtime)
        refused: list[tuple[str, int, str]] = []
        for what, args, extra, value in MISTAKES:
            cli.env = env | {f"GAZETTE_{k.upper()}": v for k, v in extra.items()}
            filled = [a.format(folder=tmp_path, dead=dead) for a in args]
            result = cli(*filled)
            named = value.format(dead=dead)
            lines = result.stderr.strip().splitlines()
            assert result.returncode != 0, (what, result.stdout)
            assert "Traceback" not in result.stderr, (what, result.stderr)
            assert len(lines) == 1, (what, result.stderr)
            assert lines[0].startswith("gazette: "), (what, lines[0])
            # One sentence: one full stop that ends it (dots inside values do not count).
            assert len(re.findall(r"[.!?](?:\s|$)", lines[0])) == 1, (what, lines[0])
            assert named in lines[0], (what, lines[0])
            refused.append((what, result.returncode, lines[0]))
        changed = rows_changed(before, database_state(runtime))
    cli.env = env
    assert changed == 0
    codes = Counter(code for _what, code, _line in refused)
    record(
        scenario("Operator errors", database_url),
        f"{len(MISTAKES)} mistakes through the real CLI: "
        + ", ".join(what for what, _a, _e, _v in MISTAKES),
        f"{len(refused)} of {len(MISTAKES)} refused with one sentence naming the value "
        f"(exit {', exit '.join(f'{c}: {n}' for c, n in sorted(codes.items()))}); "
        f"{changed} row(s) written",
        "each refused, non-zero, one sentence naming the value; 0 rows written",
    )
