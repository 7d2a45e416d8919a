"""The DKIM signer: signatures dkimpy and Mail::DKIM verify, over messages of every shape.

Digests as build_message writes them (encoded-word subjects and names, quoted-printable
bodies) and raw messages (folded headers with runs of blanks, lines with trailing
blanks and tabs, leading dots, trailing empty lines, bare line feeds), RSA-2048 and
Ed25519, each checked by a verifier that shares no code with the signer.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gazette.mail.dkim import DkimSigner, MissingDkimKeyError
from gazette.mail.dkim_canon import relaxed_body
from gazette.mail.mime import DotSafe, Envelope, build_message
from tests.support.dkim_keys import TestKey, dns_for, make_key
from tests.support.messages import dkim_tags, parse

CLOCK = 1_796_500_000


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestKey, TestKey]:
    folder = tmp_path_factory.mktemp("dkim-keys")
    return make_key(folder, "example.org", "gz2026"), make_key(
        folder, "other.example", "ed1", "ed25519"
    )


def _signer(*keys: TestKey) -> DkimSigner:
    return DkimSigner({k.domain: k.key for k in keys}, clock=lambda: CLOCK)


def _digest(subject: str, name: str, text: str, html: str) -> DotSafe:
    envelope = Envelope(
        from_name=name, from_address="news@example.org", to_name=name,
        to_address="reader@example.com", subject=subject, message_id="a.b@example.org",
        date=datetime(2026, 12, 6, 8, 0, tzinfo=UTC), list_id="weekly.example.org",
        list_name=name, unsubscribe_url="https://news.example.org/unsubscribe/" + "t" * 120,
    )  # fmt: skip
    return build_message(envelope, text, html, "b0undary-x1")


def _pieces(pieces: list[str], most: int) -> st.SearchStrategy[str]:
    """Text made of ``pieces`` (some longer than one character: runs of blanks)."""
    return st.lists(st.sampled_from(pieces), max_size=most).map("".join)


_LINE = _pieces([*"ab.=-é語", "word", " ", "  ", "\t", " \t "], 40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.text(max_size=200),
    name=st.text(max_size=60),
    lines=st.lists(_LINE, max_size=30),
    trailing_blank_lines=st.integers(0, 4),
)
def test_digests_of_any_text_verify_with_rsa_and_ed25519(
    keys: tuple[TestKey, TestKey],
    subject: str,
    name: str,
    lines: list[str],
    trailing_blank_lines: int,
) -> None:
    rsa_key, ed_key = keys
    text = "\n".join(lines) + "\n" * trailing_blank_lines
    message = _digest(subject, name, text, f"<p>{text}</p>")
    signer = _signer(rsa_key, ed_key)
    for address, key in (("news@example.org", rsa_key), ("news@other.example", ed_key)):
        signed = signer.sign(message, address)
        assert isinstance(signed, DotSafe)  # the SMTP client may still skip dot-stuffing
        assert not signed.startswith(b".")
        assert signed.find(b"\n.") < 0
        assert signed.endswith(message)
        assert dkim.verify(signed, dnsfunc=dns_for(key)) is True


_HEADER_TEXT = _pieces([*"abcXYZ09,;:<>@.", "word", " ", "  ", "\t", " \t "], 120)
_RAW_LINE = _pieces([*"ab.z-=é…", "word", " ", "  ", "\t", " \t"], 60).map(str.encode)


def _folded(value: str) -> bytes:
    """``value`` folded at its blanks every ~40 octets, as a long header arrives."""
    data = value.encode("ascii")
    out, column = bytearray(), 0
    for at, char in enumerate(data):
        if char in b" \t" and column > 40 and at + 1 < len(data):
            out += b"\r\n"
            column = 0
        out.append(char)
        column += 1
    return bytes(out)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=_HEADER_TEXT,
    extra=_HEADER_TEXT,
    lines=st.lists(_RAW_LINE, max_size=40),
    trailing_blank_lines=st.integers(0, 5),
    line_end=st.sampled_from([b"\r\n", b"\n"]),
    last_line_ended=st.booleans(),
)
def test_raw_messages_of_any_shape_verify(
    keys: tuple[TestKey, TestKey],
    subject: str,
    extra: str,
    lines: list[bytes],
    trailing_blank_lines: int,
    line_end: bytes,
    last_line_ended: bool,
) -> None:
    rsa_key, ed_key = keys
    head = [
        b"From: \t A  Sender <news@example.org>",
        b"To: reader@example.com",
        b"Subject: " + _folded(subject).replace(b"\r\n", line_end),
        b"X-Extra:" + _folded(extra).replace(b"\r\n", line_end),
        b"List-Unsubscribe:   <https://news.example.org/u/x>  ",
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        b"Received: by relay; one",
        b"Received: by relay; two",
    ]
    body = line_end.join(lines) + line_end * trailing_blank_lines
    if last_line_ended and body and not body.endswith(line_end):
        body += line_end
    message = line_end.join(head) + line_end + line_end + body
    signer = _signer(rsa_key, ed_key)
    for address, key in (("news@example.org", rsa_key), ("news@other.example", ed_key)):
        signed = signer.sign(message, address)
        assert b"\n" not in signed.replace(b"\r\n", b"")  # what is signed is what is sent
        assert dkim.verify(signed, dnsfunc=dns_for(key)) is True


_BLANK_RUNS = _pieces([" ", "  ", "x", "\t"], 300).map(str.encode)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_RAW_LINE | _BLANK_RUNS, max_size=12))
@example(lines=[b" " * 600 + b"x", b"y" + b" " * 700, b"z  "])  # runs past the 256 window
def test_the_body_canonicalization_is_dkimpys(lines: list[bytes]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


def test_what_the_signature_covers_and_what_relaxed_ignores(
    keys: tuple[TestKey, TestKey],
) -> None:
    rsa_key, ed_key = keys
    message = _digest("Ünïcode subject, long " * 6, "Zoë", "Hello reader\n.dot line\n", "<p>x</p>")
    for address, key in (("news@example.org", rsa_key), ("news@other.example", ed_key)):
        signed = _signer(rsa_key, ed_key).sign(message, address)
        dns = dns_for(key)
        # Relaxed canonicalization: blanks refolded and empty lines added at the end pass.
        assert dkim.verify(signed.replace(b"Hello reader", b"Hello \t reader"), dnsfunc=dns)
        assert dkim.verify(signed + b"\r\n\r\n", dnsfunc=dns)
        assert dkim.verify(
            signed.replace(b"MIME-Version: 1.0", b"mime-version:   1.0"), dnsfunc=dns
        )
        # A word of the body, the one-click headers, a second From: each breaks it.
        assert not dkim.verify(signed.replace(b"Hello reader", b"Hello Reader"), dnsfunc=dns)
        unsubscribe = signed.replace(b"news.example.org/unsub", b"evil.example.net/unsub")
        assert unsubscribe != signed
        assert not dkim.verify(unsubscribe, dnsfunc=dns)
        post = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        assert not dkim.verify(signed.replace(post, b""), dnsfunc=dns)
        forged = signed.replace(b"\r\nTo: ", b"\r\nFrom: other@evil.example\r\nTo: ", 1)
        assert not dkim.verify(forged, dnsfunc=dns)


def test_the_key_is_chosen_by_the_from_domain_or_its_nearest_parent(
    keys: tuple[TestKey, TestKey],
) -> None:
    rsa_key, ed_key = keys
    signer = _signer(rsa_key, ed_key)
    message = _digest("Subject", "Name", "Body\n", "<p>Body</p>")
    cases = {
        "news@example.org": ("example.org", "gz2026", "rsa-sha256"),
        "News@EXAMPLE.ORG": ("example.org", "gz2026", "rsa-sha256"),
        "digest@lists.news.example.org": ("example.org", "gz2026", "rsa-sha256"),
        "news@other.example": ("other.example", "ed1", "ed25519-sha256"),
        "news@mail.other.example": ("other.example", "ed1", "ed25519-sha256"),
    }
    for address, (domain, selector, algorithm) in cases.items():
        tags = dkim_tags(parse(signer.sign(message, address)))
        assert (tags["d"], tags["s"], tags["a"]) == (domain, selector, algorithm), address
        assert (tags["c"], tags["t"]) == ("relaxed/relaxed", str(CLOCK))
        signed = tags["h"].split(":")
        assert {"from", "to", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= set(signed)
    # A label boundary, not a suffix of the text: notexample.org is another domain.
    for address in ("news@notexample.org", "news@example.net", "news@org"):
        with pytest.raises(MissingDkimKeyError) as refused:
            signer.sign(message, address)
        sentence = str(refused.value)
        assert address in sentence
        assert "GAZETTE_DKIM_KEYS" in sentence
        assert "\n" not in sentence


def test_the_header_is_folded_into_short_lines(keys: tuple[TestKey, TestKey]) -> None:
    rsa_key, ed_key = keys
    message = _digest("Subject", "Name", "Body\n", "<p>Body</p>")
    for address in ("news@example.org", "news@other.example"):
        signed = _signer(rsa_key, ed_key).sign(message, address)
        header = signed[: len(signed) - len(message)]
        lines = header.split(b"\r\n")[:-1]
        assert lines[0].startswith(b"DKIM-Signature: v=1; a=")
        assert all(line.startswith(b" ") for line in lines[1:])
        assert max(map(len, lines)) <= 78


# --- Mail::DKIM (Perl), a verifier of its own -----------------------------------------

_PERL_VERIFY = r"""
use strict; use warnings;
use Mail::DKIM::Verifier; use Net::DNS;
my ($name, $record) = (lc shift @ARGV, shift @ARGV);
{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ($domain, $type) = @_;
        return () unless lc($domain) eq $name && $type eq 'TXT';
        my @strings = unpack('(A255)*', $record);
        return (Net::DNS::RR->new(name => $domain, type => 'TXT', txtdata => [@strings]));
    };
}
for my $file (@ARGV) {
    open(my $fh, '<:raw', $file) or die "$file: $!";
    my $verifier = Mail::DKIM::Verifier->new();
    while (my $line = <$fh>) { $line =~ s/\r?\n\z/\r\n/; $verifier->PRINT($line); }
    $verifier->CLOSE;
    print $verifier->result_detail, "\n";
}
"""


def _mail_dkim(algorithm: str) -> str | None:
    """Why Mail::DKIM cannot check ``algorithm`` here, or None when it can."""
    if shutil.which("perl") is None:
        return "perl is not installed"
    probe = subprocess.run(
        ["perl", "-MMail::DKIM", "-MMail::DKIM::Verifier", "-MNet::DNS", "-e",
         "print $Mail::DKIM::VERSION"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        return "Mail::DKIM is not installed (apt-get install libmail-dkim-perl)"
    if algorithm == "ed25519":
        module = subprocess.run(
            ["perl", "-MMail::DKIM::Algorithm::ed25519_sha256", "-e", "1"],
            capture_output=True, check=False,
        )  # fmt: skip
        if module.returncode != 0:
            return f"Mail::DKIM {probe.stdout} verifies RSA only (Ed25519 came in later releases)"
    return None


def _shapes(count: int, seed: int = 20) -> list[bytes]:
    """Digests and raw messages of the shapes the property tests draw, from one seed."""
    rng = random.Random(seed)
    words = ["Grid", "storage", "für", "Київ", "東京", "…", "=?", ".", "  ", "\t"]
    made: list[bytes] = []
    for n in range(count):
        text = "\n".join(
            "".join(rng.choice(words) + rng.choice(["", " ", "  ", "\t"]) for _ in range(12))
            for _ in range(rng.randint(0, 30))
        )
        subject = " ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))
        if n % 2:
            made.append(_digest(subject, "Zoë Ng", text + "\n" * (n % 4), f"<p>{text}</p>"))
        else:
            head = b"From: News <news@example.org>\r\nSubject: " + _folded(
                subject.encode("ascii", "replace").decode()
            )
            body = text.encode() + b"\r\n" * (n % 5)
            made.append(head + b"\r\nX-Tab:\t a \t b \r\n\r\n" + body.replace(b"\n", b"\r\n"))
    return made


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_mail_dkim_verifies_the_signatures(
    tmp_path: Path, keys: tuple[TestKey, TestKey], algorithm: str
) -> None:
    missing = _mail_dkim(algorithm)
    if missing is not None:
        pytest.skip(missing)
    key = keys[0] if algorithm == "rsa" else keys[1]
    address = f"news@{key.domain}"
    files = []
    for n, message in enumerate(_shapes(40)):
        signed = _signer(*keys).sign(
            message.replace(b"news@example.org", address.encode()), address
        )
        assert dkim.verify(signed, dnsfunc=dns_for(key)) is True
        files.append(tmp_path / f"{n}.eml")
        files[-1].write_bytes(signed)
    script = tmp_path / "verify.pl"
    script.write_text(_PERL_VERIFY)
    result = subprocess.run(
        ["perl", str(script), key.name.decode().rstrip("."), key.record.decode(), *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["pass"] * len(files)
    # And Mail::DKIM is no rubber stamp: a changed word fails.
    files[1].write_bytes(files[1].read_bytes().replace(b"Subject: ", b"Subject: X"))
    again = subprocess.run(
        ["perl", str(script), key.name.decode().rstrip("."), key.record.decode(), str(files[1])],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.stdout.startswith("fail"), again.stdout
