"""Cheap checks that a redaction kind cannot match a text, run before its regex (pure).

Most texts hold no secret at all, and `in` or a short gate regex scans a text far faster
than a kind's full patterns (judges/redact.py): a kind whose check fails is skipped. Each
check must hold for every match of its kind — a False here is a secret let through — so
tests/test_redact.py checks that skipping never changes what is redacted.
"""

from __future__ import annotations

import re
from collections.abc import Collection

# A literal every match of the kind contains: `in` scans a text far faster than the regex,
# and most texts hold no secret at all. None = no such literal (run the gate or the regex).
_MUST_CONTAIN: dict[str, Collection[str] | None] = {
    "PRIVATE_KEY": ("PRIVATE KEY",),
    "JWT": ("eyJ",),
    "API_KEY": None,
    "AWS_SECRET": None,
    "AUTH_TOKEN": None,  # matched case-insensitively: _MUST_CONTAIN_ANY_CASE
    "URL_PASSWORD": ("://",),
    "PASSWORD": None,
    "EMAIL": ("@", "at]", "at)", "AT]", "AT)"),
    "IBAN": None,
    "CARD": None,
    "SSN": None,
    "PHONE": None,
}
# The same for the case-insensitive kinds, checked on the lower-cased text. `re`'s
# IGNORECASE also folds a few non-ASCII letters onto ASCII ones, which str.lower does not (or
# not to one letter): the long s and the dotless i (its special cases), the Kelvin sign and
# the dotted capital I (whose simple lower case is ASCII; str.lower gives "i̇" for İ). Those
# are mapped to their ASCII letter first (_RE_FOLDS), so a text with accents or curly quotes
# — most real documents — skips the regex as an ASCII one does.
_RE_FOLDS = {0x17F: "s", 0x131: "i", 0x130: "i", 0x212A: "k"}
_MUST_CONTAIN_ANY_CASE: dict[str, Collection[str]] = {
    "AUTH_TOKEN": ("bearer", "auth", "token", "secret", "key", "sig", "credential"),
    "PASSWORD": (
        "passw",
        "passphrase",
        "passcode",
        "pwd",
        "kennwort",
        "mot de passe",
        "contrase",
        "senha",
    ),
}
# A cheap regex every match of the kind also matches, for the kinds without a literal.
_GATE: dict[str, re.Pattern[str]] = {
    # Every API_KEY format has a _ or - then 10+ token characters, or one of _API_LITERALS,
    # or a Twilio SID (checked only when "SK" or "AC" is in the text: _API_SIDS).
    "API_KEY": re.compile(r"[_-][A-Za-z0-9_-]{10}"),
    "AWS_SECRET": re.compile(r"[A-Za-z0-9/+=]{40}"),  # or a label: _AWS_LABELS
    # Digits first (a text has far fewer digits than letters for the regex to start on): the
    # check digits and the shortest BBAN (11, Norway); a card's first two groups.
    "IBAN": re.compile(r"\d\d[ -]?[A-Za-z0-9]{4}[ -]?[A-Za-z0-9]{4}[ -]?[A-Za-z0-9]{3}"),
    "CARD": re.compile(r"\d{4}[ .-]?\d\d"),
    "SSN": re.compile(r"\d{3}[ -]?\d{2}[ -]?\d{4}"),
    # A phone needs 7 digits (see redact_numbers) with only its separators in between.
    "PHONE": re.compile(r"\d[\d .()+-]{5,}\d"),
}


# The shortest match of these kinds, in characters without whitespace: a text whose longest
# word is shorter has none, and `max(map(len, text.split()))` is far cheaper than a regex.
_MIN_WORD = {"API_KEY": 15, "AWS_SECRET": 16}
_AWS_LABELS = ("secret", "session")
_API_LITERALS = (
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "AIza",
    "GR1348941",
    "SG.",
    "ya29.",
    ":AA",
    "dapi",
    "hooks.slack",
    "discord",
)
_API_SIDS = re.compile(r"(?:SK|AC)[0-9a-f]{32}")


def may_contain(kind: str, text: str, lowered: str | None, longest: int | None = None) -> bool:
    """False only when no match of `kind` can be in `text` (`lowered`: its lower-cased form
    with `re`'s extra folds applied, or None: run the regex; `longest`: its longest
    whitespace-free run, None: unknown)."""
    needles = _MUST_CONTAIN[kind]
    if needles is not None:
        return any(n in text for n in needles)
    if longest is not None and longest < _MIN_WORD.get(kind, 0):
        return False
    if kind == "AWS_SECRET" and (lowered is None or any(n in lowered for n in _AWS_LABELS)):
        return True  # a labelled form may be there; else only a bare 40-character key
    if kind == "API_KEY" and (
        any(n in text for n in _API_LITERALS)
        or (("SK" in text or "AC" in text) and _API_SIDS.search(text) is not None)
    ):
        return True  # else only the separated formats: the gate

    if (
        kind == "AUTH_TOKEN"
        and lowered is not None
        and "bearer" not in lowered
        and ":" not in text
        and "=" not in text
    ):
        return False  # every other AUTH_TOKEN form has key: value or key=value
    any_case = _MUST_CONTAIN_ANY_CASE.get(kind)
    if any_case is not None:
        return lowered is None or any(n in lowered for n in any_case)
    gate = _GATE.get(kind)
    return gate is None or gate.search(text) is not None


def fold_lower(text: str) -> str:
    """`text` lower-cased with `re`'s extra IGNORECASE folds applied (_RE_FOLDS)."""
    return text.lower() if text.isascii() else text.translate(_RE_FOLDS).lower()
