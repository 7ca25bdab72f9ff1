"""The text the redactor matches on, and the way back to the original (pure).

A secret written with full-width letters (ｇｈｐ＿…, jane＠example.com), mathematical or
circled look-alike letters, or with a zero-width space, soft hyphen or BOM inside it is the
same secret to a human and to a judge. The patterns therefore run on a *view*: every character
replaced by its NFKC compatibility form, and default-ignorable characters (Unicode's
Default_Ignorable_Code_Point: zero-width space/joiners, word joiner, soft hyphen, BOM,
bidirectional controls, variation selectors, tags) dropped. `origin[i]` is the index in the
original text of the view's character i, so a match maps back to a span of the original and
everything outside the matches is returned byte for byte as it came in.

Guarantee: NFKC is applied per character (compatibility mappings are per character; canonical
composition across characters is not needed to match ASCII-shaped secrets). Homoglyphs that
NFKC does not map (Cyrillic а for Latin a) are not folded: the e-mail pattern is Unicode-aware,
and token prefixes written with them are a documented limit (docs/operations/security.md,
"Redaction limits").
"""

from __future__ import annotations

import functools
import re
import unicodedata

# The redactor overwrites what it has matched with this private-use character (one per
# original character, so offsets never move); later patterns never match across it.
MASK = "\ue000"

_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@functools.lru_cache(maxsize=4096)
def _fold(ch: str) -> str:
    if _IGNORABLE.match(ch):
        return ""
    if ch == MASK:
        return "\ufffd"  # a MASK already in the input is text, not a redaction
    return unicodedata.normalize("NFKC", ch)


def view(text: str) -> tuple[str, list[int] | None]:
    """(view, origin); origin is None when the view is the text itself (the common case:
    ASCII, or already NFKC with nothing ignorable in it)."""
    if text.isascii() or (
        unicodedata.is_normalized("NFKC", text)
        and _IGNORABLE.search(text) is None
        and MASK not in text
    ):
        return text, None
    parts: list[str] = []
    origin: list[int] = []
    pos = 0
    for m in _NON_ASCII.finditer(text):
        parts.append(text[pos : m.start()])
        origin.extend(range(pos, m.start()))
        for i in range(m.start(), m.end()):
            folded = _fold(text[i])
            parts.append(folded)
            origin.extend([i] * len(folded))
        pos = m.end()
    parts.append(text[pos:])
    origin.extend(range(pos, len(text)))
    return "".join(parts), origin


def original_span(origin: list[int] | None, start: int, end: int) -> tuple[int, int]:
    """The original text's span under the view's [start, end) (end > start)."""
    if origin is None:
        return start, end
    return origin[start], origin[end - 1] + 1
