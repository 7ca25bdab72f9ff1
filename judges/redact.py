"""Redact secrets and PII before anything leaves for a third-party judge (pure).

Each distinct value becomes a typed placeholder such as ``[EMAIL_1]``; the same value gets the
same placeholder everywhere in one case, so a judge (or the local scorer) still sees that the
answer repeats the context's e-mail address, without seeing the address.

Matching runs on a normalised view of the text (judges/redact_view.py: NFKC per character,
zero-width and other default-ignorable characters dropped), so full-width, circled or
mathematical look-alikes and a zero-width space inside a key do not hide it; what is not
redacted comes back exactly as it came in.

Redaction runs before every scorer, so a false positive costs accuracy on every case: shapes
that are cheap to confirm are confirmed (Luhn, mod-97, a country's IBAN length, randomness of a
token body), and the ambiguous ones (bare digit runs, bare 40-character keys) need context or
shape (judges/redact_numbers.py, judges/redact_secrets.py).

Phones vs. timestamps (the hard case): a bare 10-digit run is a phone only if it has the North
American shape (area code and exchange start with 2-9), a national trunk 0, or a phone word
(phone, tel, call, text, reach...) is the nearest context word, and never when the nearest
context word is an identifier, time or quantity word (order, invoice, id, timestamp, max...).
Every Unix time from 2001-09-09 to 2033-05-18 starts with "1", which no area code does, so a
bare timestamp survives unless a phone word stands right before it. Formatted numbers need a
phone grouping (3-3-4, (3) 3-4, a leading 0 trunk prefix, or +country code), so thousands
groups ("1 234 567 890"), IP addresses and version strings survive. Known limits
(docs/operations/security.md, "Redaction limits"): a bare non-North-American number with no
phone word ("98765 43210") is kept; a bare North-American-shaped 10-digit number with no
context word is over-redacted.

Kinds split out of an older kind stay on under the old name, so existing configurations
(which list kinds explicitly) get them: API_KEY brings PRIVATE_KEY, AUTH_TOKEN, URL_PASSWORD
and PASSWORD; CARD brings IBAN; PHONE brings SSN.

Every pattern is bounded or anchored on a literal, so a text costs linear time; 1 MB
adversarial inputs are measured in tests/test_redact_corpus.py.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

from evalcore.redaction_kinds import KINDS
from judges import redact_numbers as numbers
from judges import redact_secrets as secrets
from judges.redact_numbers import iban_ok
from judges.redact_prefilter import fold_lower, may_contain
from judges.redact_view import MASK, original_span, view
from judges.types import Context, EvalCase

__all__ = ["KINDS", "PATTERNS", "Redactor", "expand_kinds", "iban_ok", "redact_case"]

# Combining marks are not \w in `re`, but Indic, Thai and accented words need them
# (अजय@डाटामेल.भारत): the general combining blocks plus the Indic and Thai blocks.
_MARKS = (
    "\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0900-\u0dff"
    "\u0e31-\u0e4e\u1ab0-\u1aff\u1dc0-\u1dff\u200c\u200d\u20d0-\u20ff\ufe20-\ufe2f"
)
# Values never start with "[" (a placeholder already in the text) nor with the mask (a value
# an earlier kind redacted in this pass).
_NOT_PLACEHOLDER = r"(?![\[\ue000])"  # \ue000 is MASK
_KV = r"\\?[\"']?\s{0,8}[:=]\s{0,8}\\?[\"']?"  # key = value / "key": "value" / key: value
_SEP = _KV + _NOT_PLACEHOLDER
_QUOTED = r"(?<=\")[^\"\n\\\ue000]{1,512}(?=\\?\")|(?<=')[^'\n\\\ue000]{1,512}(?=\\?')"
_QUOTED_OR_BARE = r"(?P<v>" + _QUOTED + r"|[^\s\"',;\[\]\ue000]{4,512})"
# A labelled token may sit in a URL query (&sig=...&se=...): it ends at the next "&".
_QUOTED_OR_PARAM = r"(?P<v>" + _QUOTED + r"|[^\s\"',;&<>\[\]\ue000]{4,512})"
Validator = Callable[[str, int, int], "int | None"]


def _labelled(text: str, start: int, end: int) -> int | None:
    m = _LABEL_NAME.search(text, max(0, start - 90), start)
    name = m.group(1) if m else ""
    if not secrets.secret_name(name):
        return None
    strict = not (secrets.name_phrases(name) & _EXPLICIT_NAMES)
    return end if secrets.plausible_value(text, start, end, strict=strict) else None


def _password(text: str, start: int, end: int) -> int | None:
    return end if secrets.plausible_value(text, start, end, strict=False) else None


def _prose_password(text: str, start: int, end: int) -> int | None:
    value = text[start:end]
    if not secrets.prose_password(value):
        return None
    return start + len(value.rstrip(".,;:!?)"))


_LABEL_NAME = re.compile(r"(?<![A-Za-z0-9_.-])([A-Za-z][A-Za-z0-9_.-]{0,60})" + _KV + "$")
# Names that only ever hold credentials: any value counts, as it always did.
_EXPLICIT_NAMES = frozenset(
    ["apikey", "accesstoken", "authtoken", "refreshtoken", "clientsecret", "secretkey"]
)

# Order matters: specific token formats before generic ones, numbers last. Each kind is a
# list of (pattern, validator); the value is the group "v" if the pattern has one.
PATTERNS: dict[str, tuple[tuple[re.Pattern[str], Validator | None], ...]] = {
    # Headers only: the body is found by redact_secrets.pem_spans.
    "PRIVATE_KEY": ((secrets.PEM_BEGIN, None),),
    # Signed (3 parts), unsigned alg "none" (empty signature, RFC 7519 §6), encrypted (5 parts).
    "JWT": (
        (
            re.compile(
                r"\beyJ[A-Za-z0-9_-]{5,}\.(?:eyJ[A-Za-z0-9_-]{5,}\.(?:[A-Za-z0-9_-]{5,})?"
                r"|[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,})"
            ),
            None,
        ),
    ),
    "API_KEY": (
        (
            re.compile(
                r"(?<![A-Za-z0-9_-])(?:sk-(?:proj-|svcacct-|admin-|None-|ant-[a-z]{2,5}\d\d-)?"
                r"[A-Za-z0-9_-]{16,}"  # OpenAI / Anthropic
                r"|(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key id
                r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"  # GitHub
                r"|gl(?:pat|dt|rt|ptt|soat|oas|cbt|ft|imt|agent|ffct|rrt)-[A-Za-z0-9_-]{20,}"
                r"|GR1348941[A-Za-z0-9_-]{20,}"  # GitLab
                r"|(?:xoxe\.)?xox[a-z]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,}"  # Slack
                r"|AIza[0-9A-Za-z_-]{35}|GOCSPX-[A-Za-z0-9_-]{20,}|ya29\.[A-Za-z0-9_-]{20,}"
                r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,}"  # Stripe
                r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
                r"|SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}"  # SendGrid
                r"|npm_[A-Za-z0-9]{36}|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"  # npm, PyPI
                r"|SK[0-9a-f]{32}"  # Twilio API key
                r"|shp(?:at|ss|ca|pa)_[A-Fa-f0-9]{32}|do[opr]_v1_[a-f0-9]{64}"  # Shopify, DO
                r"|dapi[a-f0-9]{32}|key-[a-f0-9]{32}"  # Databricks, Mailgun
                r"|\d{8,10}:AA[A-Za-z0-9_-]{33})"  # Telegram bot
                r"(?![A-Za-z0-9_-])"
            ),
            None,
        ),
        # Twilio's auth token travels right after its account SID.
        (
            re.compile(r"\bAC[0-9a-f]{32}\\?[\"']?\s{0,4},\s{0,4}\\?[\"']?(?P<v>[0-9a-f]{32})\b"),
            None,
        ),
        (
            re.compile(
                r"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/(?P<v>[A-Za-z0-9]{20,})"
                r"|discord(?:app)?\.com/api/webhooks/\d+/(?P<d>[A-Za-z0-9_-]{40,})"
            ),
            None,
        ),
        # Any vendor's prefixed random token: prefix_, optional scope_, random body.
        (
            re.compile(
                r"(?<![A-Za-z0-9_.+/=-])(?!sha\d|md5)[A-Za-z][A-Za-z0-9]{1,11}[_-]"
                r"(?:[A-Za-z0-9]{1,10}[_-]){0,2}[A-Za-z0-9]{20,}(?![A-Za-z0-9_.+/=-])"
            ),
            secrets.prefixed_token,
        ),
    ),
    "AWS_SECRET": (
        # aws_secret_access_key = ..., AWS_SECRET_ACCESS_KEY=..., "SecretAccessKey": "..."
        (
            re.compile(
                r"(?i)(?:aws_?)?secret_?access_?key" + _SEP + r"(?P<v>[A-Za-z0-9/+=]{16,40})"
                r"(?![A-Za-z0-9/+=])"
            ),
            None,
        ),
        # STS session tokens travel with the secret key in the same credential documents.
        (
            re.compile(r"(?i)(?:aws_?)?session_?token" + _SEP + r"(?P<v>[A-Za-z0-9/+=]{100,})"),
            None,
        ),
        # A bare secret access key: 40 random base64 characters.
        (
            re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
            secrets.bare_aws_secret,
        ),
    ),
    "AUTH_TOKEN": (
        (
            re.compile(
                r"(?i)\bbearer\s{1,8}" + _NOT_PLACEHOLDER + r"(?P<v>[A-Za-z0-9._~+/-]{16,}=*)"
            ),
            None,
        ),
        (
            re.compile(
                r"(?i)\bauthorization" + _SEP + r"(?:basic|token|digest|apikey|api-key|ssws|key)"
                r"\s{1,8}" + _NOT_PLACEHOLDER + r"(?P<v>[A-Za-z0-9._~+/-]{8,}={0,2})"
            ),
            None,
        ),
        # TWILIO_AUTH_TOKEN=..., X-API-Key: ..., AccountKey=..., &sig=..., "client_secret": "..."
        (
            # Anchored on the word that makes the name a credential's (fast to find); the
            # whole name is read back and judged by _labelled.
            re.compile(
                r"(?i)(?:token|secret|key|auth|sig|credential)[A-Za-z0-9_.-]{0,30}"
                + _SEP
                + _QUOTED_OR_PARAM
            ),
            _labelled,
        ),
    ),
    "URL_PASSWORD": (
        # scheme://user:password@host; the user part may be empty (redis://:pw@host).
        (
            re.compile(
                r"\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@\[\]\ue000]{0,256}:"
                + _NOT_PLACEHOLDER
                + r"(?P<v>[^\s/@\[\]\ue000]{1,256})@"
            ),
            None,
        ),
    ),
    "PASSWORD": (
        # PGPASSWORD=..., "password": "...", mot de passe : ...
        (
            re.compile(
                r"(?i)(?<![A-Za-z0-9])(?:[A-Za-z0-9_.-]{0,40}?"
                r"(?:password|passwd|passwort|kennwort|pwd|passphrase|passcode)[A-Za-z0-9_-]{0,20}"
                r"|mot de passe|contraseña|senha)" + _SEP + _QUOTED_OR_BARE
            ),
            _password,
        ),
        # "my password is hunter2"
        (
            re.compile(
                r"(?i)\b(?:password|passphrase|passcode|passwort|kennwort)\s{1,4}"
                r"(?:is|was|ist|est|es|:)\s{1,4}"
                + _NOT_PLACEHOLDER
                + r"(?P<v>[^\s\"'<>\[\]\ue000]{4,128})"
            ),
            _prose_password,
        ),
    ),
    # Unicode-aware: jürgen@münchen.de, 用户@例子.广告. Bounded parts keep it linear.
    "EMAIL": (
        (
            re.compile(
                rf"(?<![\w{_MARKS}.%+'-])(?P<v>[\w{_MARKS}.%+'-]{{1,64}}@"
                rf"(?:[\w{_MARKS}-]{{1,63}}\.){{1,8}}(?:[^\W\d_]|[{_MARKS}]){{2,63}})(?![\w{_MARKS}-])"
                r"(?<!git@github\.com)(?<!git@gitlab\.com)(?<!git@bitbucket\.org)"  # SSH remotes
            ),
            None,
        ),
        # Munged: jane [at] example.com, jdoe(at)example(dot)org
        (
            re.compile(
                r"(?<![\w.%+-])(?P<v>[\w.%+-]{1,64} ?[\[(](?:at|AT)[\])] ?"
                r"(?:[\w-]{1,63}(?: ?[\[(](?:dot|DOT)[\])] ?|\.)){1,8}[^\W\d_]{2,63})(?![\w-])"
            ),
            None,
        ),
    ),
    "IBAN": (
        (
            re.compile(
                r"(?<![A-Za-z0-9])(?P<v>[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}"
                r"(?:[ -]?[A-Za-z0-9]{1,3})?)(?![A-Za-z0-9])"
            ),
            numbers.iban,
        ),
    ),
    "CARD": ((re.compile(r"\b(?P<v>\d{13,19}|\d{4}(?:[ .-]\d{2,6}){2,5})\b"), numbers.card),),
    "SSN": (
        (re.compile(r"(?<![\d.,/-])(?P<v>\d{3}([ -]?)\d{2}\2\d{4})(?![\d-]|[.,]\d)"), numbers.ssn),
    ),
    "PHONE": (
        (
            re.compile(
                r"(?<![\w+$€£¥.,/#-])"
                r"(?P<v>(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,12}(?:[ .-]\d{1,12}){0,6})"
                r"(?![\w%]|[.,]\d)"
            ),
            numbers.phone,
        ),
    ),
}
if tuple(PATTERNS) != KINDS:  # one list of names: evalcore.redaction_kinds
    raise RuntimeError(f"redaction patterns {tuple(PATTERNS)} differ from KINDS {KINDS}")
# A secret wrapped onto the next lines keeps them (redact_secrets.continuation_end).
_WRAPPABLE = frozenset({"API_KEY", "AWS_SECRET", "AUTH_TOKEN"})

# Kinds split out of an older, broader kind: configurations written before the split (they
# list the old names) keep covering what the old name meant.
_FAMILY: dict[str, tuple[str, ...]] = {
    "API_KEY": ("PRIVATE_KEY", "AUTH_TOKEN", "URL_PASSWORD", "PASSWORD"),
    "CARD": ("IBAN",),
    "PHONE": ("SSN",),
}

# --- driver -------------------------------------------------------------------------------


def _value_span(m: re.Match[str]) -> tuple[int, int]:
    for group in ("v", "d"):
        if group in m.re.groupindex and m.start(group) != -1:
            return m.span(group)
    return m.span()


def _spans(kind: str, text: str) -> list[tuple[int, int]]:
    if kind == "PRIVATE_KEY":
        return secrets.pem_spans(text)
    spans: list[tuple[int, int]] = []
    for pattern, validate in PATTERNS[kind]:
        for m in pattern.finditer(text):
            start, end = _value_span(m)
            if validate is not None:
                accepted = validate(text, start, end)
                if accepted is None:
                    continue
                end = accepted
            if kind in _WRAPPABLE:
                end = secrets.continuation_end(text, end)
            if MASK not in text[start:end]:
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
        # Kinds run in order on the normalised view; what a kind matched is overwritten with
        # MASK (same length, so offsets hold) and the spans are replaced in the original.
        masked, origin = view(text)
        lowered = fold_lower(masked)
        # Masking never lengthens a word: the longest one is computed once.
        longest = max(map(len, masked.split()), default=0)
        found: list[tuple[int, int, str]] = []
        for kind in self.kinds:
            if not may_contain(kind, masked, lowered, longest):
                continue
            spans = _spans(kind, masked)
            if not spans:
                continue
            out: list[str] = []
            pos = 0
            for start, end in spans:
                found.append((start, end, self._placeholder(kind, masked[start:end])))
                out += [masked[pos:start], MASK * (end - start)]
                pos = end
            out.append(masked[pos:])
            masked = "".join(out)
            lowered = fold_lower(masked)
        if not found:
            return text
        found.sort()
        result: list[str] = []
        pos = 0
        for start, end, placeholder in found:
            o_start, o_end = original_span(origin, start, end)
            result += [text[pos:o_start], placeholder]
            pos = o_end
        result.append(text[pos:])
        return "".join(result)

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
