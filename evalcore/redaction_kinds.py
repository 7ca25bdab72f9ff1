"""The names of the redaction kinds, in the order they are applied.

Settings validate `redaction.kinds` against these names without importing the detectors
(`judges.redact` compiles dozens of patterns at import: ~0.1 s a process); `judges.redact`
checks at import that its patterns are exactly these kinds, in this order.
"""

from __future__ import annotations

KINDS: tuple[str, ...] = (
    "PRIVATE_KEY",
    "JWT",
    "API_KEY",
    "AWS_SECRET",
    "AUTH_TOKEN",
    "URL_PASSWORD",
    "PASSWORD",
    "EMAIL",
    "IBAN",
    "CARD",
    "SSN",
    "PHONE",
)
