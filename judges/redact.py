"""Redact secrets and PII before anything leaves for a third-party judge (pure).

Each distinct value becomes a typed placeholder such as ``[EMAIL_1]``; the same value gets the
same placeholder everywhere in one case, so a judge (or the local scorer) still sees that the
answer repeats the context's e-mail address, without seeing the address.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from judges.types import Context, EvalCase

# Order matters: specific token formats before the generic number patterns.
PATTERNS: dict[str, re.Pattern[str]] = {
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    "API_KEY": re.compile(
        r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI / Anthropic style
        r"|(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key id
        r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub
        r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
        r"|AIza[0-9A-Za-z_-]{35})"  # Google
    ),
    "AWS_SECRET": re.compile(r"(?i)(?<=aws_secret_access_key)[\s\"':=]+[A-Za-z0-9/+=]{40}"),
    "EMAIL": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "CARD": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "PHONE": re.compile(r"(?<![\w$€£.,])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,4}(?![\w%])"),
}
KINDS = tuple(PATTERNS)

# A literal every match of the kind contains: `in` scans a text far faster than the regex,
# and most texts hold no secret at all. None = no such literal (run the regex).
_MUST_CONTAIN: dict[str, tuple[str, ...] | None] = {
    "JWT": ("eyJ",),
    "API_KEY": ("sk-", "AKIA", "ASIA", "gh", "xox", "AIza"),
    "AWS_SECRET": None,  # matched case-insensitively
    "EMAIL": ("@",),
    "CARD": None,
    "PHONE": None,
}


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _is_phone(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    # A phone number has 9-15 digits and some separator or a leading +; a bare run of digits
    # (an order number, a year range) is left alone.
    return 9 <= len(digits) <= 15 and (text.startswith("+") or bool(re.search(r"[ .()-]", text)))


class Redactor:
    """Stateful per case: remembers which placeholder each value got."""

    def __init__(self, kinds: Iterable[str] = KINDS) -> None:
        unknown = set(kinds) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown redaction kinds: {sorted(unknown)}; known: {list(KINDS)}")
        self.kinds = tuple(k for k in PATTERNS if k in set(kinds))
        self.placeholders: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def _placeholder(self, kind: str, value: str) -> str:
        key = f"{kind}\x00{value}"
        if key not in self.placeholders:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.placeholders[key] = f"[{kind}_{self.counts[kind]}]"
        return self.placeholders[key]

    def text(self, text: str) -> str:
        for kind in self.kinds:
            needles = _MUST_CONTAIN[kind]
            if needles is not None and not any(n in text for n in needles):
                continue
            pattern = PATTERNS[kind]

            def swap(match: re.Match[str], kind: str = kind) -> str:
                value = match.group(0)
                if kind == "CARD" and not _luhn_ok(re.sub(r"\D", "", value)):
                    return value
                if kind == "PHONE" and not _is_phone(value):
                    return value
                return self._placeholder(kind, value)

            text = pattern.sub(swap, text)
        return text

    def value(self, value: Any) -> Any:
        """Redact strings anywhere inside JSON-like data (messages with parts)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value


def redact_case(case: EvalCase, kinds: Iterable[str] = KINDS) -> EvalCase:
    """The same case with secrets and PII replaced by consistent placeholders."""
    r = Redactor(kinds)
    return dataclasses.replace(
        case,
        question=r.text(case.question),
        answer=r.text(case.answer),
        contexts=tuple(Context(id=c.id, text=r.text(c.text)) for c in case.contexts),
        messages=tuple(r.value(m) for m in case.messages),
        samples=tuple(r.text(s) for s in case.samples),
    )
