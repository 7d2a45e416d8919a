"""Realistic data for the benchmarks: articles, readers, CSV files, databases, bulk seeding.

Readers are written in bulk (COPY on PostgreSQL, executemany on SQLite), never one
``subscribe()`` per row; articles go through Gazette's own ``upsert_article`` so their
summaries are sanitised exactly as production stores them.
"""

from __future__ import annotations

import csv
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from gazette.addresses import identity_key
from gazette.articles.service import ArticleInput, upsert_article
from gazette.config import Settings, load_settings
from gazette.digests.planning import plan_issue
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime, build_runtime, use_runtime
from gazette.store import migrate
from gazette.store.db import transaction

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET_KEY = "benchmark-secret-key-0123456789"
BASE_URL = "https://news.example.org"
FROM_ADDRESS = "digest@news.example.org"
NEWSLETTER = "weekly"
ARTICLES = 10
# Characters of HTML per article summary, as a feed delivers it.
SUMMARY_CHARS = 2000

# Vocabulary of the generated articles and feed items.
_VOCABULARY = (
    "grid storage demand evening peak battery capacity planners region household heating "
    "transport rail commuter fares budget city council housing supply rent density zoning "
    "economy wages inflation productivity survey evidence policy reform analysis forecast "
    "emissions carbon price market consumers investment network maintenance public "
    "private research report findings data model scenario cost benefit risk resilience "
    "local national"
)
_WORDS = tuple(_VOCABULARY.split())
FIRST_NAMES = {
    "en": ("Ada", "Grace", "Alan", "Helen", "Omar", "Priya", "Lucas", "Maria", "Tom", "Zoe"),
    "uk": ("Олена", "Тарас", "Ірина", "Богдан", "Марія", "Андрій", "Софія", "Іван"),
    "ja": ("花子", "太郎", "由美", "健", "さくら", "翔太", "美咲", "大輔"),
}
LAST_NAMES = {
    "en": ("Lovelace", "Hopper", "Turing", "Okafor", "Haddad", "Nair", "Silva", "Rossi"),
    "uk": ("Шевченко", "Коваленко", "Бондаренко", "Ткаченко", "Мельник", "Кравчук"),
    "ja": ("山田", "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "中村"),
}
_DOMAINS = ("example.org", "example.com", "example.net", "mail.example.org")


def sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(9, 16))]
    return " ".join(words).capitalize() + "."


def summary_html(rng: random.Random, n: int, target: int = 2000) -> str:
    """A feed-style article summary of about ``target`` characters of HTML.

    Paragraphs with emphasis, a list, a quotation, and links, as a publisher's feed
    carries them; blocks are added until the summary reaches its size.
    """
    blocks: list[Callable[[], str]] = [
        lambda: f"<p>{sentence(rng)} {sentence(rng)} <em>{sentence(rng)}</em></p>",
        lambda: "<ul>" + "".join(f"<li>{sentence(rng)}</li>" for _ in range(3)) + "</ul>",
        lambda: f"<blockquote>{sentence(rng)}</blockquote>",
    ]
    paragraph = lambda: f"<p>{sentence(rng)} <strong>{sentence(rng)}</strong> {sentence(rng)}</p>"  # noqa: E731
    links = (
        f'<p>Read the <a href="https://meridian.example.org/research/{n}/">full brief</a> '
        f'and the <a href="https://meridian.example.org/data/{n}.csv">data</a>.</p>'
    )
    parts: list[str] = []
    while not parts or sum(map(len, parts)) + len(links) < target - 120:
        parts.append((blocks[len(parts)] if len(parts) < len(blocks) else paragraph)())
    parts.append(links)
    return "".join(parts)


def article_inputs(
    count: int = ARTICLES, seed: int = 7, summary_chars: int = SUMMARY_CHARS
) -> list[ArticleInput]:
    """``count`` realistic articles published in the last week, newest first."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    topics = ("Energy", "Cities", "Transport", "Economy", "Technology")
    return [
        ArticleInput(
            title=" ".join(rng.choice(_WORDS) for _ in range(7)).title(),
            url=f"https://meridian.example.org/{now:%Y/%m}/article-{seed}-{n}/",
            published_at=now - timedelta(hours=6 * n + 1),
            summary=summary_html(rng, n, summary_chars),
            guid=f"bench-{seed}-{n}",
            author=f"{rng.choice(FIRST_NAMES['en'])} {rng.choice(LAST_NAMES['en'])}",
            language="en",
            topics=[topics[n % len(topics)], topics[(n + 2) % len(topics)]],
        )
        for n in range(count)
    ]


@dataclass(frozen=True)
class ReaderRow:
    """One reader as the bulk loaders write it."""

    id: int
    public_id: str
    email: str
    name: str
    language: str


def language_of(n: int) -> str:
    """Mostly English readers, with Ukrainian and Japanese ones mixed in (10% each)."""
    return {0: "uk", 1: "ja"}.get(n % 10, "en")


def reader_rows(count: int, start: int = 1, seed: int = 11) -> Iterator[ReaderRow]:
    """``count`` readers with ids ``start``.. and unique addresses and public ids."""
    rng = random.Random(seed * 1_000_003 + start)
    for n in range(start, start + count):
        language = language_of(n)
        first, last = rng.choice(FIRST_NAMES[language]), rng.choice(LAST_NAMES[language])
        public_id = f"{n:x}-{rng.getrandbits(64):016x}"
        email = f"reader{n}.{rng.choice(FIRST_NAMES['en']).lower()}@{_DOMAINS[n % len(_DOMAINS)]}"
        yield ReaderRow(n, public_id, email, f"{first} {last}", language)


def write_csv(path: Path, rows: int, seed: int = 5) -> int:
    """Write ``rows`` reader rows (0.5% invalid); return how many rows are valid."""
    rng = random.Random(seed)
    valid = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "language"])
        for reader in reader_rows(rows, seed=seed):
            roll = rng.random()
            if roll < 0.005:
                writer.writerow([reader.email.replace("@", " at "), reader.name, reader.language])
            elif roll < 0.01:
                # A language Gazette does not offer: imported with the default language.
                writer.writerow([reader.email, reader.name, "xx"])
                valid += 1
            else:
                # Addresses as people type them: mixed case, stray spaces.
                email = reader.email.title() if roll < 0.2 else reader.email
                writer.writerow(
                    [f" {email} " if roll > 0.95 else email, reader.name, reader.language]
                )
                valid += 1
    return valid


# -- databases ------------------------------------------------------------------------


@contextmanager
def pg_schema(prefix: str = "bench") -> Iterator[str]:
    """A PostgreSQL schema of its own for one run; dropped with everything in it after."""
    schema = f"{prefix}_{secrets.token_hex(5)}"
    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).set(drivername="postgresql+psycopg")
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh, empty database URL: ``kind`` is "postgresql" or "sqlite"."""
    if kind == "postgresql":
        with pg_schema() as url:
            yield url
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{secrets.token_hex(4)}.db"
    try:
        yield f"sqlite:///{path}"
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def gazette_env(var_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    """GAZETTE_* variables of one benchmark installation, with a queue of its own."""
    env = {
        "GAZETTE_VAR_DIR": str(var_dir),
        "GAZETTE_DATABASE_URL": database_url,
        "GAZETTE_SECRET_KEYS": SECRET_KEY,
        "GAZETTE_BASE_URL": BASE_URL,
        "GAZETTE_FROM_ADDRESS": FROM_ADDRESS,
        "GAZETTE_QUEUE": f"bench-{secrets.token_hex(6)}",
    }
    env.update({f"GAZETTE_{k.upper()}": v for k, v in extra.items()})
    return env


def install_runtime(env: dict[str, str], var_dir: Path) -> Runtime:
    """Migrate the database, install the runtime in this process and point Celery at it."""
    from worker.app import configure

    settings: Settings = load_settings(env, cwd=var_dir)
    runtime = build_runtime(settings)
    migrate.upgrade(runtime.engine)
    use_runtime(runtime)
    configure(settings)
    return runtime


def seed_issue_content(
    runtime: Runtime, articles: int = ARTICLES, summary_chars: int = SUMMARY_CHARS
) -> int:
    """Create the newsletter and its articles; return the newsletter id."""
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(
            session, NEWSLETTER, "The Meridian Weekly", max_articles=max(articles, 1)
        )
        for item in article_inputs(articles, summary_chars=summary_chars):
            upsert_article(session, item)
    return newsletter_id


def _sqlite_time(value: datetime) -> str:
    # The format SQLAlchemy's SQLite DATETIME writes (naive UTC, as UTCDateTime stores it).
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def seed_readers(engine: Engine, newsletter_id: int, count: int, start: int = 1) -> float:
    """Bulk-insert ``count`` confirmed readers with an active subscription; return seconds."""
    began = time.perf_counter()
    now = datetime.now(UTC)
    if engine.dialect.name == "postgresql":
        _seed_postgres(engine, newsletter_id, count, start, now)
    else:
        _seed_sqlite(engine, newsletter_id, count, start, now)
    return time.perf_counter() - began


def _seed_postgres(
    engine: Engine, newsletter_id: int, count: int, start: int, now: datetime
) -> None:
    raw: Any = engine.raw_connection()
    try:
        connection = raw.driver_connection
        with connection.cursor() as cursor:
            with cursor.copy(
                "COPY subscriber (id, public_id, email, email_key, name, language, created_at, "
                "confirmed_at, consent_source, consent_at, bounce_count, attributes) FROM STDIN"
            ) as copy:
                for r in reader_rows(count, start):
                    copy.write_row(
                        (
                            r.id,
                            r.public_id,
                            r.email,
                            identity_key(r.email),
                            r.name,
                            r.language,
                            now,
                            now,
                            "import",
                            now,
                            0,
                            "{}",
                        )
                    )
            with cursor.copy(
                "COPY subscription (id, subscriber_id, newsletter_id, status, created_at, "
                "updated_at) FROM STDIN"
            ) as copy:
                for n in range(start, start + count):
                    copy.write_row((n, n, newsletter_id, "active", now, now))
            for table in ("subscriber", "subscription"):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            cursor.execute("ANALYZE subscriber")
            cursor.execute("ANALYZE subscription")
        connection.commit()
    finally:
        raw.close()


def _seed_sqlite(engine: Engine, newsletter_id: int, count: int, start: int, now: datetime) -> None:
    stamp = _sqlite_time(now)
    raw: Any = engine.raw_connection()
    try:
        connection = raw.driver_connection
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.executemany(
            "INSERT INTO subscriber (id, public_id, email, email_key, name, language, "
            "created_at, confirmed_at, consent_source, consent_at, bounce_count, attributes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'import', ?, 0, '{}')",
            (
                (
                    r.id,
                    r.public_id,
                    r.email,
                    identity_key(r.email),
                    r.name,
                    r.language,
                    stamp,
                    stamp,
                    stamp,
                )
                for r in reader_rows(count, start)
            ),
        )
        cursor.executemany(
            "INSERT INTO subscription (id, subscriber_id, newsletter_id, status, created_at, "
            "updated_at) VALUES (?, ?, ?, 'active', ?, ?)",
            ((n, n, newsletter_id, stamp, stamp) for n in range(start, start + count)),
        )
        cursor.execute("COMMIT")
        cursor.execute("ANALYZE")
        cursor.close()
    finally:
        raw.close()


def plan(runtime: Runtime, newsletter_id: int, key: str | None = None) -> tuple[int, int, float]:
    """Plan the newsletter's issue; return (issue id, deliveries, seconds to plan and commit)."""
    began = time.perf_counter()
    with transaction(runtime.sessions) as session:
        result = plan_issue(session, newsletter_id, datetime.now(UTC), key=key)
    return result.issue_id, result.deliveries, time.perf_counter() - began
