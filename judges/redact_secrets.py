"""Which token-shaped strings are credentials (pure): validators for the secret patterns.

Vendor formats with a fixed prefix (ghp_, glpat-, SG., npm_, xoxb-, AIza, sk-ant-...) are
matched on the prefix alone. Three families need a look at the value:
- a *prefixed random token* of an unknown vendor (lin_api_…, acme_live_…): the body after the
  last separator must look random (upper and lower case letters and a digit, 20+ characters);
- a *bare AWS secret access key* (40 characters of base64 with no label): the same randomness,
  at most 3 slashes and none at either end (so paths and hex hashes are not keys);
- a *labelled credential* (TWILIO_AUTH_TOKEN=…, X-API-Key: …, AccountKey=…, sig=…): a name
  whose words include token, secret, api key, access/account/private key, credential, auth or
  sig, and a value that is not code (a call, a subscript, an environment reference) nor a
  placeholder, and has a letter and a digit or mixed case.
A secret wrapped onto following lines (terminal width, log folding) keeps its continuation
lines: each must be a lone random-looking token on its line (continuation_end).
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SECRET_WORDS = _words(
    "token secret secrets apikey accesskey accountkey sharedaccesskey privatekey credential "
    "credentials auth authtoken sig signature clientsecret secretkey accesstoken "
    "refreshtoken privatetoken"
)
# A name ending in one of these is about the credential, not the credential itself.
_META_WORDS = _words(
    "name id type url uri file path len length count limit size expires expiry ttl header "
    "field env var version prefix format location endpoint scope scopes kind usage type"
)
_NOT_VALUES = _words("none null nil true false undefined required optional string str")
_AFTER_SCHEME = re.compile(r"(?i)\b(?:bearer|basic|token)\s{1,8}$")
_CALL = re.compile(r"[A-Za-z_][\w.]*\(.*\)?")
# Environment and template references: $VAR, ${VAR}, $(cmd), %(name)s, {{ x }}, {name}, os.env...
_CODE_START = re.compile(
    r"(?i)^(?:\$\{|\$\(|\$[A-Z_][A-Z0-9_]*$|%\(|%s$|\{\{|\{[A-Za-z_]+\}$|os\.|process\.env|env\[|getenv"
    r"|secrets\.)"
)


def random_looking(value: str, min_len: int = 20) -> bool:
    return (
        len(value) >= min_len
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
    )


def prefixed_token(text: str, start: int, end: int) -> int | None:
    body = re.split(r"[_-]", text[start:end])[-1]
    return end if random_looking(body) else None


def bare_aws_secret(text: str, start: int, end: int) -> int | None:
    value = text[start:end]
    if _AFTER_SCHEME.search(text, max(0, start - 16), start):
        return None  # "Bearer <40 chars>": an HTTP credential (AUTH_TOKEN), not an AWS key
    if value[0] == "/" or value[-1] == "/" or value.count("/") > 3:
        return None
    return end if random_looking(value, 40) else None


def _name_words(name: str) -> list[str]:
    return [w.lower() for w in re.split(r"[_.\-]+", _CAMEL.sub("_", name)) if w]


def name_phrases(name: str) -> set[str]:
    """The name's words and runs of two or three of them, joined: X-API-Key -> apikey."""
    parts = _name_words(name)
    return {"".join(parts[i : i + n]) for n in (1, 2, 3) for i in range(len(parts) - n + 1)}


def secret_name(name: str) -> bool:
    """True if a key/header/parameter name says its value is a credential."""
    parts = _name_words(name)
    if not parts or parts[-1] in _META_WORDS:
        return False
    return bool(name_phrases(name) & _SECRET_WORDS)


def plausible_value(text: str, start: int, end: int, *, strict: bool) -> bool:
    """Not code, not a placeholder; with `strict`, also shaped like a generated secret."""
    value = text[start:end]
    if text[end : end + 1] in ("(", "["):
        return False  # getpass.getpass(), os.environ["KEY"]: code, not a literal
    if _CODE_START.match(value) or _CALL.fullmatch(value) or value.lower() in _NOT_VALUES:
        return False
    if re.fullmatch(r"[.*xX#•…`-]+|<.*>|your[_-].*", value):
        return False  # "...", "****", "xxxx", "<token>", "your_api_key"
    if not strict:
        return True
    has_letter = any(c.isalpha() for c in value)
    mixed = any(c.isupper() for c in value) and any(c.islower() for c in value)
    return len(value) >= 8 and has_letter and (mixed or any(c.isdigit() for c in value))


def prose_password(value: str) -> bool:
    """'my password is hunter2': the word after 'is' is a password only if it has a letter
    and a digit or symbol ('is required', 'is incorrect' are not)."""
    core = value.rstrip(".,;:!?)")
    return (
        len(core) >= 4
        and any(c.isalpha() for c in core)
        and any(not c.isalpha() for c in core)
        and core.lower() not in _NOT_VALUES
    )


_NL = r"(?:\r?\n|\\r?\\n)"  # real newlines or JSON-escaped ones (a key inside a JSON string)
_CONTINUATION = re.compile(
    _NL + r"[ \t]{0,16}(?P<c>[A-Za-z0-9+/_.~-]{12,512}={0,2})(?=[ \t]*(?:" + _NL + r"|$))"
)


def continuation_end(text: str, end: int, lines: int = 4) -> int:
    """The end of a secret that ends at a line break and goes on on the next lines."""
    for _ in range(lines):
        m = _CONTINUATION.match(text, end)
        if m is None or not random_looking(m.group("c"), 12):
            break
        end = m.end("c")
    return end


# --- PEM private keys --------------------------------------------------------------------

# Headers only: the body is found by pem_spans (a lazy "up to END" regex is quadratic on many
# BEGINs without an END).
PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----")

_PEM_BODY = re.compile(
    r"(?:" + _NL + r"[ \t]{0,16}(?:[A-Za-z0-9+/=]{1,128}|[A-Za-z-]{1,32}: [^\r\n\\]{0,128})"
    r"(?=[\r\n\\]|$))*"  # whole lines only: a prose line after a truncated key is kept
)
_PEM_END = "-----END "


def pem_spans(text: str) -> list[tuple[int, int]]:
    """BEGIN ... PRIVATE KEY through its END line; a truncated key to the end of its body."""
    begins = list(PEM_BEGIN.finditer(text))
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
