"""The wiring: one Runtime per process, built from Settings, shared by CLI, worker and web.

Entry points ask for ``current_runtime()``; it is built lazily, so a Celery worker
creates its database engine in the child process after the fork, never before (each
pool process builds it as it starts: worker.app). Work an
entry point hands off (a confirmation, an issue's batches) goes through
``runtime.dispatcher``: in-process with no broker, the registered queue dispatcher with one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gazette.config import Settings, load_settings
from gazette.digests.composer import SendContext
from gazette.dispatch import Dispatcher, InProcessDispatcher, queue_dispatcher
from gazette.mail.dkim import DkimSigner
from gazette.mail.provider_headers import provider_header
from gazette.mail.transports import make_transport
from gazette.mail.verp import Verp
from gazette.ratelimit import RateLimiter, make_limiter, make_session_gate, make_throttle
from gazette.rendering import Renderer
from gazette.store.db import make_engine, make_session_factory, make_statement_engine
from gazette.tokens import Tokens


@dataclass(frozen=True)
class Runtime:
    """Everything built from Settings that the entry points share."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    tokens: Tokens
    renderer: Renderer
    send_context: SendContext
    limiter: RateLimiter
    dispatcher: Dispatcher
    # Each statement its own transaction on PostgreSQL (store.db), for one-statement changes.
    statement_engine: Engine


def build_runtime(settings: Settings) -> Runtime:
    """Build the engine, session factory, tokens, renderer, transport and dispatcher."""
    engine = make_engine(settings.database_url)
    tokens = Tokens(settings.secret_keys)
    renderer = Renderer(settings.template_dir)
    sessions = make_session_factory(engine)
    limiter = make_limiter(settings.broker_url, sessions, settings.queue)
    send_context = SendContext(
        base_url=settings.base_url,
        default_from=settings.sender,
        tokens=tokens,
        renderer=renderer,
        transport=make_transport(
            settings.smtp,
            settings.messages_per_connection,
            settings.smtp_connections,
            pipelining=settings.smtp_pipelining,
            gate=make_session_gate(
                settings.broker_url, settings.smtp_connections_total, settings.queue
            ),
        ),
        throttle=make_throttle(settings.broker_url, settings.send_rate, settings.queue),
        signer=_signer(settings),
        lease=timedelta(seconds=settings.lease_seconds),
        deliverability=settings.deliverability,
        brand=settings.brand,
        verp=_verp(settings),
        provider_header=provider_header(settings.providers.mail_provider, settings.secret_keys),
    )
    dispatcher: Dispatcher = (
        InProcessDispatcher(sessions, send_context, limiter, settings.batch_size)
        if settings.eager
        else queue_dispatcher(settings, sessions)
    )
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        limiter=limiter,
        tokens=tokens,
        renderer=renderer,
        send_context=send_context,
        dispatcher=dispatcher,
        statement_engine=make_statement_engine(engine),
    )


def _signer(settings: Settings) -> DkimSigner | None:
    """The DKIM signer of the settings' keys (one per From domain), or None when they set none."""
    return DkimSigner.from_settings(settings.dkim_keys) if settings.dkim_keys else None


def _verp(settings: Settings) -> Verp | None:
    """The VERP signer of GAZETTE_BOUNCE_ADDRESS, or None when it is not set."""
    if settings.bounce_address is None:
        return None
    return Verp(settings.bounce_address, settings.secret_keys)


_current: Runtime | None = None


def current_runtime() -> Runtime:
    """Return this process's runtime, building it from the environment on first use."""
    global _current
    if _current is None:
        _current = build_runtime(load_settings())
    return _current


def use_runtime(runtime: Runtime | None) -> None:
    """Install ``runtime`` as this process's (None forgets it, disposing its engine)."""
    global _current
    if _current is not None and _current is not runtime:
        _current.engine.dispose()
    _current = runtime
