"""Reading a CSV file of readers: check it whole first, then yield its rows one by one.

The check reads the file once to prove it is readable CSV with an email column from
start to end (so a bad byte on line 90,000 fails an import before anything is
written). Reading then yields each row's address, name and language, rejecting a row
with a bad address or an overlong field alone, with its line number.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

from gazette.addresses import AddressError, identity_key, normalise_address
from gazette.errors import GazetteError
from gazette.subscribers.service import LANGUAGES
from gazette.text import clean_line

MAX_FIELD = 10_000


@dataclass(frozen=True)
class RejectedRow:
    """A row that was not imported: its line in the file and the reason."""

    line: int
    reason: str


@dataclass
class ImportReport:
    """What an import did, row by row category."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_unsubscribed: int = 0
    skipped_suppressed: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    # Language tags read as an offered language (``ja-JP`` as ``ja``).
    languages_mapped: int = 0
    # New readers whose language is not offered, given the newsletter's default instead.
    languages_defaulted: int = 0
    default_language: str = ""
    # Readers left pending by this import, in the file's order: whom to send a link to.
    pending: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the operator and the log."""
        line = (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.skipped_unsubscribed} skipped as unsubscribed, "
            f"{self.skipped_suppressed} skipped as forgotten or suppressed, "
            f"{len(self.rejected)} rejected"
        )
        if self.languages_mapped or self.languages_defaulted:
            mapped = self.languages_mapped
            line += (
                f", {mapped} language{'' if mapped == 1 else 's'} mapped, "
                f"{self.languages_defaulted} given the default language {self.default_language}"
            )
        return line


class ReaderRow(NamedTuple):
    """One accepted row of the file: its line, the reader's address, name and language."""

    line: int
    email: str
    name: str
    language: str
    # The identity of ``email``: rows with one key are one reader.
    key: str
    # True when the file named a language Gazette does not offer.
    unoffered: bool


def offered_language(tag: str) -> tuple[str, bool]:
    """The offered language a tag names (``ja-JP``, ``EN_gb``), and whether it was mapped.

    Empty when the tag is empty or names a language Gazette has no templates for.
    """
    code = tag.strip().lower()
    if not code or code in LANGUAGES:
        return code, False
    primary = code.replace("_", "-").split("-", 1)[0]
    if primary in LANGUAGES:
        return primary, True
    return "", False


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig drops the byte-order mark Excel writes; newline="" is what csv wants.
    return open(path, encoding="utf-8-sig", errors="strict", newline="")


def _reader(handle: IO[str], source: str) -> tuple[csv.DictReader[str], dict[str, str]]:
    """Return a reader over the rows and the mapping of our column names to the file's."""
    # strict: an unclosed quote is an error, not a field that swallows the next lines.
    reader = csv.DictReader(handle, strict=True)
    try:
        header = reader.fieldnames
    except (csv.Error, UnicodeDecodeError) as exc:
        raise GazetteError(f"{source} cannot be read as CSV on line 1 ({exc}).") from None
    if not header:
        raise GazetteError(f"{source} is empty: expected a header row with an email column.")
    columns = {name.strip().casefold(): name for name in header if name}
    if "email" not in columns:
        shown = ", ".join(repr(n) for n in header[:10])
        raise GazetteError(f"{source} has no email column (its header row is {shown}).")
    return reader, columns


def _check_encoding(path: Path) -> None:
    """Decode the file line by line, so a bad byte is reported on its own line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise GazetteError(
                    f"{path} is not UTF-8 text: byte 0x{line[exc.start]:02x} on line {number}."
                ) from None


def _records(reader: csv.DictReader[str]) -> Iterator[tuple[int, list[str]]]:
    """The rows after the header, each with the line it ends on, as ``reader`` gives them.

    DictReader's own iteration builds a dict per row; this reads its underlying csv
    reader instead, skipping blank rows as it does.
    """
    rows = reader.reader
    for row in rows:
        if row:
            yield rows.line_num, row


def check_file(path: Path) -> int:
    """Read the whole file once; return its row count or raise GazetteError on line N."""
    source = str(path)
    if not path.is_file():
        raise GazetteError(f"{source} is not a file.")
    _check_encoding(path)
    with _open_text(path) as handle:
        reader, _columns = _reader(handle, source)
        count = 0
        start = reader.line_num + 1
        try:
            for line, _row in _records(reader):
                count += 1
                start = line + 1
        except csv.Error as exc:
            raise GazetteError(
                f"{source} is not valid CSV: the record that starts on line {start} ({exc})."
            ) from None
    return count


def read_rows(path: Path, report: ImportReport, smtputf8: bool) -> Iterator[ReaderRow]:
    """Yield the file's acceptable rows; a rejected one goes to ``report`` with its line."""
    with _open_text(path) as handle:
        reader, columns = _reader(handle, str(path))
        header = reader.fieldnames or []
        width = len(header)
        # As in DictReader, a name repeated in the header row reads its last column. A
        # column the file lacks sits at ``width``, past the end of every row it accepts,
        # so it reads as empty, as does a column past the end of a short row.
        last = {name: at for at, name in enumerate(header)}
        named = [last[original] for original in columns.values()]
        email_at = last[columns["email"]]
        name_at = last[columns["name"]] if "name" in columns else width
        language_at = last[columns["language"]] if "language" in columns else width
        for line, record in _records(reader):
            fields = len(record)
            if fields > width:
                report.rejected.append(RejectedRow(line, "more fields than the header row"))
                continue
            # Only a named column's field counts; most rows have no long field at all.
            if max(map(len, record)) > MAX_FIELD and any(
                at < fields and len(record[at]) > MAX_FIELD for at in named
            ):
                report.rejected.append(RejectedRow(line, f"a field is over {MAX_FIELD} characters"))
                continue
            raw_email = record[email_at] if email_at < fields else ""
            try:
                email = normalise_address(raw_email, allow_smtputf8=smtputf8)
            except AddressError as exc:
                report.rejected.append(RejectedRow(line, str(exc)))
                continue
            # Empty when the file does not say: an existing reader keeps their language.
            raw_language = record[language_at] if language_at < fields else ""
            language, mapped = offered_language(raw_language) if raw_language else ("", False)
            report.languages_mapped += mapped
            name = record[name_at] if name_at < fields else ""
            yield ReaderRow(
                line, email, clean_line(name, 200), language, identity_key(email),
                bool(raw_language.strip()) and not language,
            )  # fmt: skip


def chunks(rows: Iterator[ReaderRow], size: int) -> Iterator[list[ReaderRow]]:
    """The rows in lists of ``size`` (the last may be shorter), one per transaction."""
    chunk: list[ReaderRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
