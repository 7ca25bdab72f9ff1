"""Redact secrets and PII before anything leaves for a third-party judge (pure).

Each distinct value becomes a typed placeholder such as ``[EMAIL_1]``; the same value gets the
same placeholder everywhere in one case, so a judge (or the local scorer) still sees that the
answer repeats the context's e-mail address, without seeing the address.

Redaction runs before every scorer, so a false positive costs accuracy on every case: shapes
that are cheap to confirm are confirmed (Luhn for cards, mod-97 for IBANs, a country's IBAN
length), and the ambiguous ones (bare digit runs) need context.

Phones vs. timestamps (the hard case): a bare 10-digit run is a phone only if it has the North
American shape (area code and exchange start with 2-9) or a phone word (phone, tel, call,
mobile...) is the nearest context word before it, and never when the nearest context word is
an identifier or time word (order, invoice, id, timestamp, created...). Every Unix time from
2001-09-09 to 2033-05-18 starts with "1", which no area code does, so a bare timestamp survives
unless a phone word stands right before it. Formatted numbers need a phone grouping (3-3-4,
(3) 3-4, a leading 0 trunk prefix, or +country code), so thousands groups ("1 234 567 890"),
IP addresses and version strings survive. Missed by design: a bare non-North-American number
with no phone word ("98765 43210"); over-redacted: a bare North-American-shaped 10-digit
number with no context word (e.g. 2147483647).

Kinds split out of an older kind stay on under the old name, so existing configurations
(which list kinds explicitly) get them: API_KEY brings PRIVATE_KEY, AUTH_TOKEN, URL_PASSWORD
and PASSWORD; CARD brings IBAN.

Every pattern is bounded or anchored on a literal, so a text costs linear time; 1 MB
adversarial inputs are measured in tests/test_redact_corpus.py.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from judges.types import Context, EvalCase

# Combining marks are not \w in `re`, but Indic, Thai and accented words need them
# (अजय@डाटामेल.भारत): the general combining blocks plus the Indic and Thai blocks.
_MARKS = (
    "\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0900-\u0dff"
    "\u0e31-\u0e4e\u1ab0-\u1aff\u1dc0-\u1dff\u200c\u200d\u20d0-\u20ff\ufe20-\ufe2f"
)
# Values are never allowed to start with "[": a placeholder is never redacted twice.
_NOT_PLACEHOLDER = r"(?!\[)"

# Order matters: specific token formats before generic ones, numbers last.
PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    # Headers only: the body is found by _pem_spans (a lazy "up to END" regex is quadratic
    # on many BEGINs without an END).
    "PRIVATE_KEY": (re.compile(r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----"),),
    "JWT": (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),),
    "API_KEY": (
        re.compile(
            r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI / Anthropic style
            r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key id
            r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"  # GitHub
            r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
            r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
            r"|AIza[0-9A-Za-z_-]{35}"  # Google
            r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,}"  # Stripe
            r"|hf_[A-Za-z0-9]{30,})"  # Hugging Face
        ),
    ),
    "AWS_SECRET": (
        # aws_secret_access_key = ..., AWS_SECRET_ACCESS_KEY=..., "SecretAccessKey": "..."
        re.compile(
            r"(?i)(?:aws_?)?secret_?access_?key\\?[\"']?\s{0,8}[:=]\s{0,8}\\?[\"']?"
            r"(?P<v>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        # STS session tokens travel with the secret key in the same credential documents.
        re.compile(
            r"(?i)(?:aws_?)?session_?token\\?[\"']?\s{0,8}[:=]\s{0,8}\\?[\"']?"
            r"(?P<v>[A-Za-z0-9/+=]{100,})"
        ),
    ),
    "AUTH_TOKEN": (
        re.compile(r"(?i)\bbearer\s{1,8}" + _NOT_PLACEHOLDER + r"(?P<v>[A-Za-z0-9._~+/-]{16,}=*)"),
        re.compile(
            r"(?i)\bauthorization\\?[\"']?\s{0,8}[:=]\s{0,8}\\?[\"']?basic\s{1,8}"
            r"(?P<v>[A-Za-z0-9+/]{8,}={0,2})"
        ),
    ),
    "URL_PASSWORD": (
        # scheme://user:password@host; the user part may be empty (redis://:pw@host).
        re.compile(
            r"\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@\[\]]{0,256}:"
            + _NOT_PLACEHOLDER
            + r"(?P<v>[^\s/@\[\]]{1,256})@"
        ),
    ),
    "PASSWORD": (
        # key = value / "key": "value" for names that only ever hold credentials.
        re.compile(
            r"(?i)(?<![A-Za-z0-9])(?:password|passwd|pwd|passphrase|client_secret|secret_key"
            r"|api_?key|access_token|auth_token|refresh_token)\\?[\"']?\s{0,8}[:=]\s{0,8}\\?[\"']?"
            + _NOT_PLACEHOLDER
            + r"(?P<v>(?<=\")[^\"\n\\]{1,256}(?=\\?\")|(?<=')[^'\n\\]{1,256}(?=\\?')"
            r"|[^\s\"',;\[\]]{4,256})"
        ),
    ),
    # Unicode-aware: jürgen@münchen.de, 用户@例子.广告. Bounded parts keep it linear.
    "EMAIL": (
        re.compile(
            rf"(?<![\w{_MARKS}.%+-])(?P<v>[\w{_MARKS}.%+-]{{1,64}}@"
            rf"(?:[\w{_MARKS}-]{{1,63}}\.){{1,8}}(?:[^\W\d_]|[{_MARKS}]){{2,63}})(?![\w{_MARKS}-])"
        ),
    ),
    "IBAN": (re.compile(r"\b(?P<v>[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)\b"),),
    "CARD": (re.compile(r"\b(?P<v>\d{13,19}|\d{4}(?:[ -]\d{2,6}){2,5})\b"),),
    "PHONE": (
        re.compile(
            r"(?<![\w+$€£¥.,/#-])"
            r"(?P<v>(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,12}(?:[ .-]\d{1,12}){0,6})"
            r"(?![\w%]|[.,]\d)"
        ),
    ),
}
KINDS = tuple(PATTERNS)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Kinds split out of an older, broader kind: configurations written before the split (they
# list the old names) keep covering what the old name meant.
_FAMILY: dict[str, tuple[str, ...]] = {
    "API_KEY": ("PRIVATE_KEY", "AUTH_TOKEN", "URL_PASSWORD", "PASSWORD"),
    "CARD": ("IBAN",),
}

# A literal every match of the kind contains: `in` scans a text far faster than the regex,
# and most texts hold no secret at all. None = no such literal (run the regex).
_MUST_CONTAIN: dict[str, Collection[str] | None] = {
    "PRIVATE_KEY": ("PRIVATE KEY",),
    "JWT": ("eyJ",),
    "API_KEY": _words(
        "sk- AKIA ASIA ghp_ gho_ ghu_ ghs_ ghr_ github_pat_ glpat- xox AIza _live_ _test_ whsec_ "
        "hf_"
    ),
    "AWS_SECRET": None,  # matched case-insensitively: _MUST_CONTAIN_ANY_CASE
    "AUTH_TOKEN": None,
    "URL_PASSWORD": ("://",),
    "PASSWORD": None,
    "EMAIL": ("@",),
    "IBAN": None,
    "CARD": None,
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
    "AWS_SECRET": ("secret", "session"),
    "AUTH_TOKEN": ("bearer", "authorization"),
    "PASSWORD": ("passw", "passphrase", "pwd", "secret", "apikey", "api_key", "token"),
}
# A cheap regex every match of the kind also matches, for the kinds without a literal:
# most texts have no digit run long enough for a card or a phone, and no IBAN prefix.
_GATE: dict[str, re.Pattern[str]] = {
    "IBAN": re.compile(r"[A-Z]{2}\d{2}"),
    "CARD": re.compile(r"\d{4}"),
    # A phone needs 8 digits (see _phone) with only its separators between the first and last.
    "PHONE": re.compile(r"\d[\d .()+-]{6,}\d"),
}


def _may_contain(kind: str, text: str, lowered: str | None) -> bool:
    """False only when no match of `kind` can be in `text` (`lowered`: its lower-cased form
    with `re`'s extra folds applied, or None: run the regex)."""
    needles = _MUST_CONTAIN[kind]
    if needles is not None:
        return any(n in text for n in needles)
    any_case = _MUST_CONTAIN_ANY_CASE.get(kind)
    if any_case is not None:
        return lowered is None or any(n in lowered for n in any_case)
    gate = _GATE.get(kind)
    return gate is None or gate.search(text) is not None


# --- validators: (text, start, end) -> accepted end (<= end) or None ---------------------

Validator = Callable[[str, int, int], "int | None"]


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _shorter(value: str, seps: str) -> Iterator[int]:
    """Lengths of `value`, longest first, cut at separators: a greedy match may have taken a
    following number (a year after a card, a count after a phone)."""
    yield len(value)
    for i in range(len(value) - 1, 0, -1):
        if value[i] in seps:
            yield i


def _card(text: str, start: int, end: int) -> int | None:
    value = text[start:end]
    for n in _shorter(value, " -"):
        digits = re.sub(r"\D", "", value[:n])
        groups = re.split(r"[ -]", value[:n])
        # Card numbers start with 2-6 (Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover 6);
        # a formatted one has at least three groups.
        plausible = len(groups) != 2 and 13 <= len(digits) <= 19 and digits[0] in "23456"
        if plausible and _luhn_ok(digits):
            return start + n
    return None


# IBAN length per country (ISO 13616 registry): the country and its length must both fit.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(value: str) -> bool:
    compact = value.replace(" ", "")
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban(text: str, start: int, end: int) -> int | None:
    value = text[start:end]
    for n in _shorter(value, " "):
        if iban_ok(value[:n]):
            return start + n
    return None


_PHONE_WORDS = _words(
    "phone phones tel telephone mobile cell cellphone call calls calling called callback sms "
    "whatsapp fax contact dial mob ph telefon telefono teléfono tél handy móvil celular "
    "电话 手机 電話"
)
_NOT_PHONE_WORDS = _words(
    "order orders invoice id ids ref reference account acct tracking sku ticket case customer "
    "transaction txn po isbn serial timestamp ts epoch unix time date created updated modified "
    "expires expiry exp iat nbf seconds secs ms build version rev commit batch job run pid uid "
    "port row rows count total amount balance price cost zip postcode"
)
_PLACEHOLDER = re.compile(r"\[[A-Z_]+_\d+\]")
_WORD = re.compile(r"[^\W\d_]+")
_NANP_BARE = re.compile(r"1?[2-9]\d\d[2-9]\d{6}")


def _same_cell(window: str, *, before: bool) -> str:
    # Context ends at a line break or a table cell border: the word "call" on the line above
    # says nothing about a timestamp on this one.
    cut = re.split(r"[\n|]", window)
    return cut[-1] if before else cut[0]


def _context(text: str, start: int, end: int) -> str | None:
    """'phone', 'other' or None: the nearest context word before the number (or after)."""
    before = _same_cell(_PLACEHOLDER.sub(" ", text[max(0, start - 40) : start]), before=True)
    for word in reversed(_WORD.findall(before.lower())[-3:]):
        if word in _PHONE_WORDS:
            return "phone"
        if word in _NOT_PHONE_WORDS:
            return "other"
    after = _same_cell(_PLACEHOLDER.sub(" ", text[end : end + 24]), before=False).lower()
    for word in _WORD.findall(after)[:2]:
        if word in _NOT_PHONE_WORDS:
            return "other"
        if word in _PHONE_WORDS:
            return "phone"
    return None


def _phone_shape_ok(value: str, digits: str, context: Callable[[], str | None]) -> bool:
    if value.startswith("+"):
        return 8 <= len(digits) <= 15
    if not 9 <= len(digits) <= 13:
        return False
    groups = re.findall(r"\d+", value)
    if re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", value) and all(int(g) <= 255 for g in groups):
        return False  # an IPv4 address
    sizes = [len(g) for g in groups]
    # Shapes only phones have: (415) 555-0132, 415-555-0132, 1.415.555.0132, and national
    # formats with a trunk 0 (020 7946 0958, 01 23 45 67 89, 030 1234567).
    if "(" in value or sizes in ([3, 3, 4], [1, 3, 3, 4]):
        return True
    if len(groups) > 1 and groups[0].startswith("0") and all(s >= 2 for s in sizes[1:]):
        return True
    # Bare runs and other groupings (timestamps, thousands, IDs) depend on the nearest word.
    where = context()
    if where == "phone":
        return True
    return where is None and len(groups) == 1 and bool(_NANP_BARE.fullmatch(digits))


def _phone(text: str, start: int, end: int) -> int | None:
    value = text[start:end]
    for n in _shorter(value, " .-"):
        candidate = value[:n].rstrip(" .-")
        digits = re.sub(r"\D", "", candidate)
        if len(digits) < 8:
            return None  # shorter cuts have fewer digits still
        if _phone_shape_ok(candidate, digits, functools.partial(_context, text, start, start + n)):
            return start + n
    return None


_VALIDATORS: dict[str, Validator] = {"CARD": _card, "IBAN": _iban, "PHONE": _phone}

# --- PEM private keys ---------------------------------------------------------------------

_NL = r"(?:\r?\n|\\r?\\n)"  # real newlines or JSON-escaped ones (a key inside a JSON string)
_PEM_BODY = re.compile(
    r"(?:" + _NL + r"[ \t]{0,16}(?:[A-Za-z0-9+/=]{1,128}|[A-Za-z-]{1,32}: [^\r\n\\]{0,128})"
    r"(?=[\r\n\\]|$))*"  # whole lines only: a prose line after a truncated key is kept
)
_PEM_END = "-----END "


def _pem_spans(text: str) -> list[tuple[int, int]]:
    """BEGIN ... PRIVATE KEY through its END line; a truncated key to the end of its body."""
    begins = list(PATTERNS["PRIVATE_KEY"][0].finditer(text))
    spans: list[tuple[int, int]] = []
    next_end = -2  # cached position of the next END line at or after the cursor
    pos = 0
    for i, m in enumerate(begins):
        if m.start() < pos:
            continue
        if next_end != -1 and next_end < m.end():
            next_end = text.find(_PEM_END, m.end())
        stop = None
        limit = begins[i + 1].start() if i + 1 < len(begins) else len(text)
        if next_end != -1 and next_end < limit:  # an END before the next BEGIN: ours
            close = text.find("-----", next_end + len(_PEM_END), next_end + 64)
            if close != -1 and "PRIVATE KEY" in text[next_end:close]:
                stop = close + 5
        if stop is None:
            body = _PEM_BODY.match(text, m.end())
            stop = body.end() if body else m.end()
        spans.append((m.start(), stop))
        pos = stop
    return spans


# --- driver -------------------------------------------------------------------------------


def _spans(kind: str, text: str) -> list[tuple[int, int]]:
    if kind == "PRIVATE_KEY":
        return _pem_spans(text)
    validate = _VALIDATORS.get(kind)
    spans: list[tuple[int, int]] = []
    for pattern in PATTERNS[kind]:
        for m in pattern.finditer(text):
            start, end = m.span("v") if "v" in pattern.groupindex else m.span()
            if validate is not None:
                accepted = validate(text, start, end)
                if accepted is None:
                    continue
                end = accepted
            spans.append((start, end))
    if len(PATTERNS[kind]) > 1:  # two patterns of one kind may overlap: keep the first
        spans.sort()
        kept: list[tuple[int, int]] = []
        for s, e in spans:
            if not kept or s >= kept[-1][1]:
                kept.append((s, e))
        spans = kept
    return spans


def expand_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """Configured kinds plus the kinds split out of them, in application order."""
    chosen = set(kinds)
    unknown = chosen - set(PATTERNS)
    if unknown:
        raise ValueError(f"unknown redaction kinds: {sorted(unknown)}; known: {list(KINDS)}")
    for kind in list(chosen):
        chosen.update(_FAMILY.get(kind, ()))
    return tuple(k for k in PATTERNS if k in chosen)


class Redactor:
    """Stateful per case: remembers which placeholder each value got."""

    def __init__(self, kinds: Iterable[str] = KINDS) -> None:
        self.kinds = expand_kinds(kinds)
        self.placeholders: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def _placeholder(self, kind: str, value: str) -> str:
        key = f"{kind}\x00{value}"
        if key not in self.placeholders:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.placeholders[key] = f"[{kind}_{self.counts[kind]}]"
        return self.placeholders[key]

    def text(self, text: str) -> str:
        lowered = text.lower() if text.isascii() else text.translate(_RE_FOLDS).lower()
        for kind in self.kinds:
            if not _may_contain(kind, text, lowered):
                continue
            spans = _spans(kind, text)
            if not spans:
                continue
            out: list[str] = []
            pos = 0
            for start, end in spans:
                out += [text[pos:start], self._placeholder(kind, text[start:end])]
                pos = end
            out.append(text[pos:])
            text = "".join(out)
            if lowered is not None:
                lowered = text.translate(_RE_FOLDS).lower()
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
