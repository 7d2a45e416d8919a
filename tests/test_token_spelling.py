"""A link token has one spelling: any other string, however it decodes, is refused.

itsdangerous decodes base64 leniently: it drops characters outside the alphabet (an
"é", the "%" of "%ff"), accepts padding ("=="), and ignores the unused low bits of a
part's last character, so several strings carried the same signature. Hypothesis
mutates valid tokens in those ways and others; every string that differs is refused.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gazette.tokens import Purpose, TokenClaims, TokenError, Tokens

KEY = "spelling-secret-key-0123456789"
ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
TOKENS = Tokens([KEY])
# Strings lenient decoders skip or fold: padding, escapes, non-ASCII, blanks, the
# standard alphabet's two characters, a separator.
NOISE = ["=", "==", "%ff", "%41", "é", "ℌ", " ", "\n", "\t", "+", "/", ".", "\x00", "\u200b"]

claims = st.tuples(
    st.text(ALPHABET, min_size=1, max_size=30),
    st.text(string.ascii_lowercase + "-", min_size=1, max_size=20),
)


def sibling(part: str, choice: int) -> str:
    """``part`` with its last character swapped for one differing only in unused bits.

    A part whose length leaves 1 over 4 (an earlier edit deleted a character) is not
    base64 at all and has no such sibling: it comes back as it is.
    """
    if len(part) % 4 == 1:
        return part
    unused = {0: 0, 2: 4, 3: 2}[len(part) % 4]
    high = ALPHABET.index(part[-1]) >> unused << unused
    others = [
        ALPHABET[high | low] for low in range(1 << unused) if ALPHABET[high | low] != part[-1]
    ]
    if not others:
        return part
    return part[:-1] + others[choice % len(others)]


@st.composite
def mutations(draw: st.DrawFn, token: str) -> str:
    """One or more edits of ``token``, the spellings a lenient decoder would accept first."""
    edits = draw(st.integers(1, 3))
    for _ in range(edits):
        kind = draw(
            st.sampled_from(["insert", "delete", "replace", "case", "sibling", "escape", "ends"])
        )
        at = draw(st.integers(0, max(len(token) - 1, 0)))
        if kind == "insert":
            noise = draw(st.sampled_from(NOISE) | st.text(min_size=1, max_size=3))
            token = token[:at] + noise + token[at:]
        elif kind == "delete":
            token = token[:at] + token[at + 1 :]
        elif kind == "replace":
            token = token[:at] + draw(st.characters()) + token[at + 1 :]
        elif kind == "case":
            token = token[:at] + token[at : at + 1].swapcase() + token[at + 1 :]
        elif kind == "sibling":
            parts = token.split(".")
            index = draw(st.integers(0, len(parts) - 1))
            if parts[index] and all(c in ALPHABET for c in parts[index]):
                parts[index] = sibling(parts[index], draw(st.integers(0, 15)))
            token = ".".join(parts)
        elif kind == "escape":
            # Percent-encode one character, as a mail client or proxy might.
            token = (
                token[:at]
                + "".join(f"%{b:02X}" for b in token[at : at + 1].encode())
                + token[at + 1 :]
            )
        else:
            token = (
                draw(st.sampled_from(NOISE)) + token
                if draw(st.booleans())
                else token + draw(st.sampled_from(NOISE))
            )
    return token


@settings(max_examples=300, deadline=None)
@given(purpose=st.sampled_from(list(Purpose)), claim=claims, data=st.data())
def test_every_other_spelling_of_a_valid_token_is_refused(
    purpose: Purpose, claim: tuple[str, str], data: st.DataObject
) -> None:
    token = TOKENS.mint(purpose, *claim)
    assert TOKENS.read(purpose, token) == TokenClaims(*claim)
    spelt = data.draw(mutations(token), label="spelling")
    if spelt == token:
        return
    with pytest.raises(TokenError, match="not valid"):
        TOKENS.read(purpose, spelt)


@pytest.mark.parametrize("where", [0, 1, 2])
def test_each_parts_alternative_last_character_is_refused(where: int) -> None:
    """The case lenient decoding made invisible: same bytes, another last character."""
    token = TOKENS.mint(Purpose.UNSUBSCRIBE, "sub_8f14e45fceea167a", "weekly-digest")
    parts = token.split(".")
    tried = 0
    for choice in range(16):
        changed = sibling(parts[where], choice)
        if changed == parts[where]:
            continue
        tried += 1
        forged = ".".join([*parts[:where], changed, *parts[where + 1 :]])
        with pytest.raises(TokenError):
            TOKENS.read(Purpose.UNSUBSCRIBE, forged)
    # The signature (20 bytes) and this payload leave unused bits, so there was a sibling.
    assert tried > 0 or where == 1
