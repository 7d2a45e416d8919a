"""The bounce samples (tests/bounces/samples), filled in for a test, and Maildirs to hold them."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
BOUNCE = "bounces@bounce.example.org"
# What the samples are addressed to when a test does not say: the plain bounce address.
PLAIN = BOUNCE


def sample(
    name: str, *, verp: str = PLAIN, recipient: str = "ada@example.org", n: int = 0
) -> bytes:
    """Sample ``name`` mailed to ``verp`` about ``recipient``; ``n``: a Message-ID of its own."""
    raw = (SAMPLES / name).read_bytes()
    raw = raw.replace(b"@@VERP@@", verp.encode()).replace(b"@@RECIPIENT@@", recipient.encode())
    if n:
        raw = raw.replace(b"Message-Id: <", f"Message-Id: <copy{n}.".encode(), 1)
        raw = raw.replace(b"Message-ID: <", f"Message-ID: <copy{n}.".encode(), 1)
    return raw


def make_maildir(path: Path) -> Path:
    """An empty Maildir at ``path``."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def deliver(maildir: Path, name: str, raw: bytes, *, seen: bool = False) -> Path:
    """Put a message into the Maildir as a delivery agent would (new/, or cur/ once read)."""
    target = maildir / ("cur" if seen else "new") / (f"{name}:2,S" if seen else name)
    staged = maildir / "tmp" / name
    staged.write_bytes(raw)
    staged.rename(target)
    return target


def files(folder: Path) -> list[Path]:
    """The messages in a Maildir folder's new/ and cur/."""
    return sorted(
        p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()
    )
