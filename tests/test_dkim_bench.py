"""The dkim benchmark scenario at a small size: it runs, verifies, and reports its figures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import suite
from benchmarks.harness.context import QUICK, Context
from benchmarks.run import HARNESS_KEY


def test_the_dkim_scenario_reports_cpu_per_message_for_each_signer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("GAZETTE_DATABASE_URL", "GAZETTE_BROKER_URL", "GAZETTE_SMTP_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GAZETTE_SECRET_KEYS", HARNESS_KEY)
    ctx = Context(
        sizes=replace(QUICK, corpus=20), workdir=tmp_path, runs=1, profile=False,
        log=lambda _text: None,
    )  # fmt: skip
    assert suite.resolve(["dkim"]) == ["dkim"]
    suite.BY_NAME["dkim"].run(ctx)
    assert not ctx.failed, ctx.notes  # every signed message verified with dkimpy
    figures = {name: (f.value, f.unit) for name, f in ctx.figures.items()}
    assert set(figures) == {
        "dkim.unsigned.cpu_ms_per_msg",
        *(f"dkim.{s}.{m}" for s in ("rsa2048", "ed25519", "dkimpy") for m in (
            "cpu_ms_per_msg", "sign_ms_per_msg"
        )),
        "dkim.rsa2048.vs_dkimpy",
    }  # fmt: skip
    assert all(value > 0 for name, (value, _unit) in figures.items() if "cpu_ms" in name)
    assert figures["dkim.rsa2048.vs_dkimpy"][1] == "x"
