"""Scenario 7: forged, tampered and replayed tokens change nothing."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from itsdangerous import URLSafeTimedSerializer

from gazette.tokens import Purpose, TokenClaims, TokenError, Tokens
from tests.reliability.helpers import URL_SAFE, _b64, _mutations, _signed_bytes
from tests.support.figures import record

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability


def test_reliability_forged_tokens_are_never_accepted() -> None:
    rng = random.Random(20261128)
    new_key, old_key = "new-key-0123456789abcdef", "old-key-0123456789abcdef"
    retired_key, foreign_key = "retired-key-0123456789ab", "another-installation-key"
    tokens = Tokens([new_key, old_key])  # the newest signs, the older one still verifies
    subscribers = [f"sub{n:03d}{rng.getrandbits(40):010x}" for n in range(40)]
    genuine = [
        (purpose, tokens.mint(purpose, sub, f"news-{n % 3}"), TokenClaims(sub, f"news-{n % 3}"))
        for n, (purpose, sub) in enumerate(itertools.product(Purpose, subscribers))
    ]
    # The control: every genuine token reads back, including one signed by the older key.
    for purpose, token, claims in genuine:
        assert tokens.read(purpose, token) == claims
    older = Tokens([old_key]).mint(Purpose.UNSUBSCRIBE, subscribers[0], "news-0")
    assert tokens.read(Purpose.UNSUBSCRIBE, older).subscriber == subscribers[0]

    retired = Tokens([retired_key])  # a key this installation signed with once, now dropped
    foreign = URLSafeTimedSerializer(foreign_key, salt="gazette.unsubscribe")
    unsigned = URLSafeTimedSerializer(new_key, salt="not-gazette")

    def candidates() -> Iterator[tuple[str, Purpose, str]]:
        purposes = list(Purpose)
        for _ in range(15_000):
            raw = rng.randbytes(rng.randrange(1, 120))
            yield "random bytes", rng.choice(purposes), raw.decode("latin-1")
        for _ in range(10_000):
            yield (
                "random URL-safe",
                rng.choice(purposes),
                "".join(rng.choices(URL_SAFE, k=rng.randrange(1, 140))),
            )
        for _ in range(10_000):
            parts = [rng.randrange(20, 80), rng.randrange(4, 8), 27]
            yield (
                "token-shaped",
                rng.choice(purposes),
                ".".join("".join(rng.choices(URL_SAFE, k=k)) for k in parts),
            )
        for _ in range(5_000):
            text = "".join(chr(rng.randrange(0x20, 0xD7FF)) for _ in range(rng.randrange(1, 60)))
            yield "random Unicode", rng.choice(purposes), text
        mutated = 0
        while mutated < 40_000:
            purpose, token, _claims = rng.choice(genuine)
            candidate = _mutations(token, rng)
            # Changing only the padding bits of the signature's last character leaves the
            # very same signature: that is the genuine token, not a forgery.
            if candidate == token or _signed_bytes(candidate) == _signed_bytes(token):
                continue
            mutated += 1
            yield "mutated", purpose, candidate
        by_purpose = {p: [t for q, t, _c in genuine if q is p] for p in Purpose}
        for _ in range(5_000):
            # Another reader's payload under this reader's timestamp and signature.
            purpose = rng.choice(purposes)
            victim, attacker = rng.sample(by_purpose[purpose], 2)
            yield "spliced", purpose, ".".join([victim.split(".")[0], *attacker.split(".")[1:]])
        forged_payloads = 0
        while forged_payloads < 5_000:
            # A payload written by hand, compact JSON as itsdangerous writes it.
            claims = [rng.choice(subscribers), rng.choice(["news-0", "news-1", "other"])]
            forged = _b64(json.dumps(claims, separators=(",", ":")).encode())
            purpose, real, _c = rng.choice(genuine)
            if forged == real.split(".")[0]:
                continue  # that is the genuine token itself
            forged_payloads += 1
            yield "forged payload", purpose, ".".join([forged, *real.split(".")[1:]])
        for _ in range(5_000):
            minted_for, read_as = rng.sample(list(Purpose), 2)
            token = tokens.mint(minted_for, rng.choice(subscribers), "news-1")
            yield "wrong purpose", read_as, token
        for _ in range(5_000):
            purpose = rng.choice(list(Purpose))
            yield "retired key", purpose, retired.mint(purpose, rng.choice(subscribers), "news-2")
        for _ in range(2_500):
            claims = [rng.choice(subscribers), "news-0"]
            yield "foreign key", Purpose.UNSUBSCRIBE, str(foreign.dumps(claims))
        for _ in range(2_500):
            claims = [rng.choice(subscribers), "news-0"]
            yield "other salt", Purpose.PREFERENCES, str(unsigned.dumps(claims))

    tried: Counter[str] = Counter()
    accepted: list[tuple[str, str]] = []
    crashed: list[tuple[str, str, str]] = []
    started = time.monotonic()
    for category, purpose, token in candidates():
        tried[category] += 1
        try:
            tokens.read(purpose, token)
        except TokenError:
            continue
        except Exception as error:  # anything but TokenError would be a 500 page
            crashed.append((category, token[:80], repr(error)))
            continue
        accepted.append((category, token))
    elapsed = time.monotonic() - started
    total = sum(tried.values())
    assert total >= 100_000
    assert accepted == []
    assert crashed == []
    record(
        "Forged tokens",
        f"{total:,} forged tokens read by Tokens.read: "
        + ", ".join(f"{n:,} {category}" for category, n in tried.items()),
        f"{len(accepted)} accepted, {len(crashed)} other exception(s), {elapsed:.1f} s",
        "0 accepted; every rejection a TokenError",
    )
