"""The dkim scenario: the worker's CPU per message with DKIM signing on.

Digest messages are composed by Gazette's own Composer, as the worker composes them,
unsigned and then signed by each signer in turn: RSA-2048 and Ed25519 through OpenSSL
(gazette.mail.dkim), and dkimpy's RSA-2048 (the signer before), all in one process,
CPU time per message. A signing figure is a run's signed pass less its unsigned one.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from benchmarks.harness import seeding
from benchmarks.harness.context import Context, Scenario
from benchmarks.harness.figures import Figure, FigureSpec, FigureTable, Ratio, fmt
from benchmarks.harness.report import this_run
from gazette.digests.composer import Composer, Reader, composer_for
from gazette.mail.dkim import SIGNED_HEADERS, DkimKey, DkimSigner
from gazette.runtime import use_runtime
from gazette.store.models import utcnow

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo

DOMAIN = seeding.FROM_ADDRESS.rpartition("@")[2]
SIGNERS = {
    "rsa2048": "RSA-2048, OpenSSL",
    "ed25519": "Ed25519, OpenSSL",
    "dkimpy": "RSA-2048, dkimpy",
}
FIGURES = FigureTable(
    "dkim",
    {
        "unsigned": FigureSpec(
            "dkim.unsigned.cpu_ms_per_msg", "CPU ms/msg", "Compose without DKIM, one process"
        ),
        "signed": FigureSpec(
            "dkim.{signer}.cpu_ms_per_msg", "CPU ms/msg", "Compose and DKIM-sign, {label}"
        ),
        "sign": FigureSpec(
            "dkim.{signer}.sign_ms_per_msg", "CPU ms/msg", "DKIM signing alone, {label}"
        ),
        "speedup": FigureSpec(
            "dkim.rsa2048.vs_dkimpy", "x", "RSA-2048 signing: OpenSSL's speed-up over dkimpy"
        ),
    },
)
METHOD = (
    "an issue of the benchmark articles seeded into SQLite and composed for each reader "
    "by `Composer.compose` (renders cached, as in a worker), first unsigned, then signed "
    "by `gazette.mail.dkim.DkimSigner` with an RSA-2048 and an Ed25519 key and by dkimpy "
    "(`dkim.sign`, relaxed/relaxed, the same headers) with the RSA key; `time.process_time` "
    "per pass, one signed message of each verified by dkimpy. The signing figure of a run is "
    "its signed pass less its unsigned pass; dkimpy signs a fifth of the messages."
)


class DkimpySigner(DkimSigner):
    """The signer before OpenSSL: dkimpy's pure-Python RSA, for the comparison only."""

    def __init__(self, selector: str, domain: str, pem: bytes) -> None:
        super().__init__({})
        self._selector, self._domain, self._pem = selector.encode(), domain.encode(), pem

    def sign(self, message: bytes, from_address: str) -> bytes:
        """``message`` with dkimpy's DKIM-Signature in front."""
        signature = dkim.sign(
            message, self._selector, self._domain, self._pem,
            include_headers=list(SIGNED_HEADERS), canonicalize=(b"relaxed", b"relaxed"),
        )  # fmt: skip
        return bytes(signature) + message


def signers() -> tuple[dict[str, DkimSigner], dict[bytes, bytes]]:
    """The three signers by name, and the DNS records that verify them."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )  # fmt: skip
    rsa_public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_public = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    records = {
        f"rsa._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public),
        f"ed._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=ed25519; p="
        + base64.b64encode(ed_public),
    }
    made: dict[str, DkimSigner] = {
        "rsa2048": DkimSigner({DOMAIN: DkimKey(DOMAIN, "rsa", rsa_key)}),
        "ed25519": DkimSigner({DOMAIN: DkimKey(DOMAIN, "ed", ed_key)}),
        "dkimpy": DkimpySigner("rsa", DOMAIN, pem),
    }
    return made, records


def _cpu_ms(composer: Composer, readers: Sequence[Reader]) -> tuple[float, bytes]:
    """CPU ms per message composing ``readers``, and the last message."""
    now = utcnow()
    last = b""
    began = time.process_time()
    for reader in readers:
        composed = composer.compose(reader, now)
        assert composed is not None
        last = composed[1]
    return (time.process_time() - began) * 1000 / len(readers), last


def measure(ctx: Context, count: int, folder: Path) -> dict[str, list[float]]:
    """Per run: CPU ms per message unsigned, and signed by each signer (by its name)."""
    made, records = signers()
    samples: dict[str, list[float]] = {"unsigned": []}
    with seeding.database("sqlite", folder) as url:
        runtime = seeding.install_runtime(seeding.gazette_env(folder, url), folder)
        try:
            newsletter_id = seeding.seed_issue_content(runtime, summary_chars=ctx.summary_chars)
            seeding.seed_readers(runtime.engine, newsletter_id, count)
            issue_id, _deliveries, _seconds = seeding.plan(runtime, newsletter_id)
            with runtime.sessions() as session:
                prepared = composer_for(session, runtime.send_context, issue_id).prepared
            readers = [
                Reader(r.public_id, r.email, r.name, r.language) for r in seeding.reader_rows(count)
            ]
            composers = {
                name: Composer(prepared, replace(runtime.send_context, signer=signer, cache={}))
                for name, signer in [("unsigned", None), *made.items()]
            }
            for composer in composers.values():
                _cpu_ms(composer, readers[:10])  # each language's first message renders
            for _run in range(ctx.runs):
                for name, composer in composers.items():
                    share = readers if name != "dkimpy" else readers[: max(count // 5, 10)]
                    ms, last = _cpu_ms(composer, share)
                    if name != "unsigned" and not dkim.verify(
                        last, dnsfunc=lambda n, timeout=5: records.get(n)
                    ):
                        raise RuntimeError(f"a message signed by {name} does not verify")
                    samples.setdefault(name, []).append(ms)
        finally:
            use_runtime(None)
    return samples


def run(ctx: Context) -> None:
    """Compose the benchmark issue unsigned and signed by each signer, CPU per message."""
    count = ctx.sizes.corpus
    ctx.setup["DKIM"] = (
        f"{count:,} digest messages per pass (dkimpy: a fifth), one process, "
        "relaxed/relaxed, 10 signed header fields"
    )
    with ctx.attempt("dkim signing"):
        samples = measure(ctx, count, ctx.folder("dkim"))
        unsigned = samples["unsigned"]
        FIGURES.register(ctx, "unsigned", unsigned)
        signing: dict[str, Figure] = {}
        for name, label in SIGNERS.items():
            FIGURES.register(ctx, "signed", samples[name], signer=name, label=label)
            extra = [signed - base for signed, base in zip(samples[name], unsigned, strict=True)]
            signing[name] = FIGURES.register(ctx, "sign", extra, signer=name, label=label)
        FIGURES.register(ctx, "speedup", Ratio(signing["dkimpy"], signing["rsa2048"]))


def findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """This run's CPU per message with DKIM on, and what signing adds."""
    current = this_run(figures, info)
    unsigned = current.get("dkim.unsigned.cpu_ms_per_msg")
    rsa_on = current.get("dkim.rsa2048.cpu_ms_per_msg")
    if unsigned is None or rsa_on is None:
        return []
    parts = [
        f"**DKIM.** Composing a digest costs {fmt(unsigned.value)} CPU ms per message "
        f"unsigned and {fmt(rsa_on.value)} signed with RSA-2048 through OpenSSL"
    ]
    ed = current.get("dkim.ed25519.cpu_ms_per_msg")
    if ed is not None:
        parts.append(f", {fmt(ed.value)} with Ed25519")
    speedup = current.get("dkim.rsa2048.vs_dkimpy")
    if speedup is not None:
        parts.append(f"; OpenSSL signs RSA {fmt(speedup.value)} times faster than dkimpy")
    return ["".join(parts) + ".", ""]


SCENARIO = Scenario("dkim", run, FIGURES, METHOD, findings)
