"""Apply one report about sent mail to the database, once.

``process_message`` takes a message's bytes and a session: what a Maildir reader, an
IMAP reader or a test hands over. The report's VERP token, when valid, names the exact
delivery (and so the reader and the issue); without one the reported recipients are
matched to readers by their identity key, unless the operator requires a token. Every
report acted on is recorded in bounce_report under its message key, first, so a copy of
it changes nothing, even one processed at the same moment by another run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gazette.addresses import AddressError, identity_key
from gazette.bounces.formats import Field
from gazette.bounces.policy import Effect, effect_of, reported_status
from gazette.bounces.reports import Kind, Report, read_report
from gazette.deliverability_settings import Deliverability
from gazette.newsletters.pausing import check_pause
from gazette.store.models import BounceReport, Delivery, Issue, Subscriber, utcnow
from gazette.subscribers.bounces import DEFAULT_RULES, record_bounce, record_complaint
from gazette.subscribers.service import Origin, record_event

UNMATCHED = "unmatched"
# What a report adds that may pause the issue's newsletter (newsletters/pausing).
_ADVERSE = (Effect.HARD, Effect.COMPLAINT)
# The event each effect that is not a bounce or a complaint writes in the reader's history.
_EVENTS = {
    Effect.NOT_THE_READER: "bounce_not_counted",
    Effect.DELAYED: "delayed",
    Effect.AUTO_REPLY: "auto_reply",
}


@dataclass(frozen=True)
class Outcome:
    """What processing one message did, for the summary."""

    kind: Kind
    # One per reader acted on (a report may name several readers without a token).
    effects: tuple[Effect, ...] = ()
    # Recognised, but naming no reader we know (or no valid token, when one is required).
    unmatched: bool = False
    # Already processed: a copy of a message seen before.
    duplicate: bool = False
    # Why it was not understood, for an unrecognised message.
    reason: str = ""


@dataclass(frozen=True)
class _Target:
    """One reader a report is about, with the issue and delivery when the token named them."""

    subscriber_id: int
    field: Field | None
    issue_id: int | None = None
    delivery_id: int | None = None


def process_message(
    session: Session,
    raw: bytes,
    *,
    secret_keys: Sequence[str],
    require_verp: bool,
    rules: Deliverability = DEFAULT_RULES,
    now: datetime | None = None,
) -> Outcome:
    """Read the message ``raw`` and apply it; see apply_report."""
    report = read_report(raw, secret_keys)
    return apply_report(session, report, require_verp=require_verp, rules=rules, now=now)


def apply_report(
    session: Session,
    report: Report,
    *,
    require_verp: bool,
    rules: Deliverability = DEFAULT_RULES,
    now: datetime | None = None,
) -> Outcome:
    """Act on ``report`` once: bounce, count, record or suppress as the policy says.

    An unrecognised report changes nothing (the caller keeps the message aside). A
    report whose key was recorded before changes nothing either. ``require_verp``: a
    report without a valid token matches nobody. A hard bounce or a complaint about an
    issue may pause its newsletter (newsletters/pausing), in this same transaction.
    ``rules``: the soft-bounce decay and the pause limits; ``now``: the clock.
    """
    if report.kind is Kind.UNRECOGNISED:
        return Outcome(report.kind, reason=report.reason)
    if recorded(session, report.key):
        return Outcome(report.kind, duplicate=True)
    targets = _targets(session, report, require_verp)
    effects = [(target, effect_of(report.kind, target.field)) for target in targets]
    if not _claim(session, report, effects):
        return Outcome(report.kind, duplicate=True)
    now = now or utcnow()
    done = []
    for target, effect in effects:
        if effect is not None:
            _apply(session, report, target, effect, rules, now)
            done.append(effect)
    adverse = {t.issue_id for t, e in effects if e in _ADVERSE and t.issue_id is not None}
    for issue_id in sorted(adverse):
        check_pause(session, issue_id, rules, now, fresh=True)
    return Outcome(report.kind, tuple(done), unmatched=not targets)


def recorded(session: Session, key: str) -> bool:
    """Whether a report with ``key`` was applied (or recorded as naming nobody) before."""
    return (
        session.scalar(select(BounceReport.id).where(BounceReport.message_key == key)) is not None
    )


def _targets(session: Session, report: Report, require_verp: bool) -> list[_Target]:
    """The readers ``report`` is about: its token's delivery, else the matched recipients."""
    first = report.recipients[0] if report.recipients else None
    if report.delivery_id is not None:
        row = session.execute(
            select(Delivery.subscriber_id, Delivery.issue_id).where(
                Delivery.id == report.delivery_id
            )
        ).first()
        if row is None:
            return []  # the reader was forgotten since, and their ledger rows with them
        return [_Target(row.subscriber_id, first, row.issue_id, report.delivery_id)]
    if require_verp:
        return []
    targets: dict[int, _Target] = {}
    for field in report.recipients:
        try:
            key = identity_key(field.address)
        except AddressError:
            continue
        found = session.scalar(select(Subscriber.id).where(Subscriber.email_key == key))
        if found is not None and found not in targets:
            targets[found] = _Target(found, field)
    return list(targets.values())


def _claim(session: Session, report: Report, effects: list[tuple[_Target, Effect | None]]) -> bool:
    """Record the report's rows before acting; False when another run recorded it first."""
    rows = [_row(report, n, target, effect) for n, (target, effect) in enumerate(effects)]
    try:
        with session.begin_nested():
            session.execute(insert(BounceReport), rows or [_row(report, 0, None, None)])
    except IntegrityError:
        return False
    return True


def _row(
    report: Report, position: int, target: _Target | None, effect: Effect | None
) -> dict[str, object]:
    """The bounce_report row of one reader of a report (``target`` None: nobody matched)."""
    field = target.field if target else (report.recipients[0] if report.recipients else None)
    return {
        "message_key": report.key, "position": position, "kind": report.kind.value,
        "effect": effect.value if effect else UNMATCHED, "status": reported_status(field),
        "issue_id": target and target.issue_id, "delivery_id": target and target.delivery_id,
        "subscriber_id": target and target.subscriber_id, "domain": _domain(field),
    }  # fmt: skip


def _domain(field: Field | None) -> str | None:
    """The receiving domain a recipient's address names, lower-cased."""
    if field is None or "@" not in field.address:
        return None
    return field.address.rpartition("@")[2].lower()[:255] or None


def _apply(
    session: Session,
    report: Report,
    target: _Target,
    effect: Effect,
    rules: Deliverability,
    now: datetime,
) -> None:
    """Change the reader as ``effect`` says, keep it in their history, count it for the issue."""
    words = _words(report, target.field)
    if effect is Effect.COMPLAINT:
        record_complaint(session, target.subscriber_id, detail=words)
        _count(session, target.issue_id, complained_count=Issue.complained_count + 1)
        return
    if effect.counts_against_reader:
        hard = effect is Effect.HARD
        record_bounce(session, target.subscriber_id, hard=hard, detail=words, rules=rules, now=now)
        _count(
            session, target.issue_id, bounced_count=Issue.bounced_count + 1,
            hard_bounced_count=Issue.hard_bounced_count + int(hard),
        )  # fmt: skip
        return
    record_event(
        session, _EVENTS[effect], Origin("system"), subscriber_id=target.subscriber_id,
        report=words, issue=str(target.issue_id or ""),
    )  # fmt: skip


def _count(session: Session, issue_id: int | None, **values: object) -> None:
    """Add to the running totals of the issue a report named (none: nothing to add to)."""
    if issue_id is not None:
        session.execute(update(Issue).where(Issue.id == issue_id).values(**values))


def _words(report: Report, field: Field | None) -> str:
    """What the report said about the reader, in one line: format, status, diagnostic."""
    parts = [report.reason]
    if field is not None:
        status = reported_status(field)
        parts += [status or "", field.diagnostic]
    return " ".join(" ".join(p for p in parts if p).split())[:300]
