"""Read a Maildir of reports about sent mail, act on each message, move it out of the way.

Every file in ``new/`` and ``cur/`` is read as a message and processed in a transaction
of its own; then it moves to the ``.processed`` folder, or, when it was not understood,
to ``.unrecognised`` with the reason in an ``X-Gazette-Reason`` header at its top (both
Maildir++ folders, so a mail client or an IMAP server shows them). A second run over
the same Maildir finds nothing to do; a message copied back is recognised by its key
and changes nothing. A crash between the commit and the move leaves the file in place,
and the next run only moves it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gazette.bounces.policy import Effect
from gazette.bounces.processing import Outcome, process_message
from gazette.bounces.reports import Kind
from gazette.deliverability_settings import Deliverability
from gazette.errors import GazetteError
from gazette.subscribers.bounces import DEFAULT_RULES

PROCESSED = ".processed"
UNRECOGNISED = ".unrecognised"
REASON_HEADER = b"X-Gazette-Reason"
# A report is a few kilobytes and quotes at most the message it is about; anything far
# larger is not one, and is not read into memory to find out.
MAX_BYTES = 25 * 1024 * 1024
_OUR_HEADER = re.compile(rb"\A(?:X-Gazette-Reason:[^\n]*\n(?:[ \t][^\n]*\n)*)+", re.IGNORECASE)


class MaildirError(GazetteError):
    """The path is not a Maildir, or a file in it cannot be read or moved (one sentence)."""


@dataclass
class Summary:
    """What a run did, message by message."""

    read: int = 0
    effects: Counter[Effect] = field(default_factory=Counter)
    unrecognised: int = 0
    unmatched: int = 0
    duplicates: int = 0
    # Where the messages that were not understood were put (a folder, or an IMAP folder).
    kept_aside: str | None = None

    def add(self, outcome: Outcome) -> None:
        """Count one message's outcome."""
        self.read += 1
        if outcome.kind is Kind.UNRECOGNISED:
            self.unrecognised += 1
        elif outcome.duplicate:
            self.duplicates += 1
        elif outcome.unmatched:
            self.unmatched += 1
        self.effects.update(outcome.effects)


def check_maildir(path: Path) -> Path:
    """``path`` as an absolute Maildir (with new/ and cur/), or MaildirError naming it."""
    resolved = path.expanduser().resolve()
    if not (resolved / "new").is_dir() or not (resolved / "cur").is_dir():
        raise MaildirError(f"{str(path)!r} is not a Maildir (a folder with new/ and cur/ in it).")
    return resolved


def waiting(maildir: Path) -> list[Path]:
    """The messages waiting in ``new/`` and ``cur/``, oldest name first."""
    found = []
    for sub in ("new", "cur"):
        try:
            entries = list(os.scandir(maildir / sub))
        except OSError as exc:
            raise MaildirError(f"Cannot read {str(maildir / sub)!r} ({exc.strerror}).") from None
        found += [
            Path(entry.path) for entry in entries
            if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False)
        ]  # fmt: skip
    return sorted(found, key=lambda p: p.name)


def process_maildir(
    sessions: sessionmaker[Session],
    path: Path,
    *,
    secret_keys: Sequence[str],
    require_verp: bool,
    progress: Callable[[int], None] | None = None,
    rules: Deliverability = DEFAULT_RULES,
) -> Summary:
    """Process every message waiting in the Maildir ``path``; ``progress(done)`` after each."""
    maildir = check_maildir(path)
    files = waiting(maildir)
    summary = Summary(kept_aside=str(maildir / UNRECOGNISED))
    for done, file in enumerate(files, 1):
        raw = _read(file)
        if raw is not None:
            outcome = process_raw(sessions, raw, secret_keys, require_verp, rules)
            try:
                _move(maildir, file, raw, outcome)
            except OSError as exc:
                # Applied and committed: the next run finds it done and only moves it.
                raise MaildirError(
                    f"Cannot move {str(file)!r} out of the way ({exc.strerror}); "
                    "it was processed and will not count again."
                ) from None
            summary.add(outcome)
        if progress is not None:
            progress(done)
    return summary


def _read(file: Path) -> bytes | None:
    """The message's bytes without a reason header of ours; None when it is gone."""
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError):
        return None  # taken by another run, or not a message
    except OSError as exc:  # the operator's to fix (permissions); what is done stays done
        raise MaildirError(f"Cannot read {str(file)!r} ({exc.strerror}).") from None
    return without_reason(raw)


def without_reason(raw: bytes) -> bytes:
    """The message without the reason header a run before put at its top."""
    return _OUR_HEADER.sub(b"", raw)


def with_reason(raw: bytes, reason: str) -> bytes:
    """The message with ``reason`` in one X-Gazette-Reason header at its top."""
    said = reason.encode("ascii", "backslashreplace").replace(b"\r", b" ").replace(b"\n", b" ")
    newline = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    return REASON_HEADER + b": " + said[:400] + newline + raw


def process_raw(
    sessions: sessionmaker[Session],
    raw: bytes,
    secret_keys: Sequence[str],
    require_verp: bool,
    rules: Deliverability = DEFAULT_RULES,
) -> Outcome:
    """Apply one message in a transaction of its own; one too large is not understood."""
    if len(raw) > MAX_BYTES:
        return Outcome(Kind.UNRECOGNISED, reason=f"larger than {MAX_BYTES // 2**20} MB")
    with sessions() as session, session.begin():
        return process_message(
            session, raw, secret_keys=secret_keys, require_verp=require_verp, rules=rules
        )


def _move(maildir: Path, file: Path, raw: bytes, outcome: Outcome) -> None:
    """Move the message into .processed, or into .unrecognised with the reason on top."""
    if outcome.kind is not Kind.UNRECOGNISED:
        target = _folder(maildir, PROCESSED) / "cur" / _cur_name(file.name)
        os.replace(file, _free(target))
        return
    folder = _folder(maildir, UNRECOGNISED)
    if len(raw) > MAX_BYTES:  # only its start was read: moved as it is
        os.replace(file, _free(folder / "cur" / _cur_name(file.name)))
        return
    staged = folder / "tmp" / file.name
    staged.write_bytes(with_reason(raw, outcome.reason))
    arrived = file.stat()  # retention counts from when it came, not from this copy
    os.utime(staged, (arrived.st_atime, arrived.st_mtime))
    os.replace(staged, _free(folder / "cur" / _cur_name(file.name)))
    file.unlink(missing_ok=True)


def expire_maildir(maildir: Path, before: datetime) -> int:
    """Delete the messages of .processed and .unrecognised that came before ``before``.

    A message's date is its file's modification time: when it was delivered (moving it
    keeps it). Returns how many were deleted.
    """
    cutoff, gone = before.timestamp(), 0
    for sub in (f"{name}/{part}" for name in (PROCESSED, UNRECOGNISED) for part in ("new", "cur")):
        try:
            entries = list(os.scandir(maildir / sub))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise MaildirError(f"Cannot read {str(maildir / sub)!r} ({exc.strerror}).") from None
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                Path(entry.path).unlink(missing_ok=True)
                gone += 1
    return gone


def _folder(maildir: Path, name: str) -> Path:
    """A Maildir++ subfolder of ``maildir``, created with its tmp/, new/ and cur/."""
    folder = maildir / name
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return folder


def _cur_name(name: str) -> str:
    """A file name for cur/: with the Maildir info suffix (":2,S": seen) when it had none."""
    return name if ":2," in name else f"{name}:2,S"


def _free(target: Path) -> Path:
    """``target``, or a name beside it no file has (a copy of a message processed before)."""
    base, colon, info = target.name.partition(":")
    free, copy = target, 0
    while free.exists():
        copy += 1
        free = target.with_name(f"{base}.copy{copy}{colon}{info}")
    return free
