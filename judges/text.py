"""Pure text helpers for local (no-LLM) scorers: sentences, tokens, numbers, names.

Everything here is a deterministic function of its input, with no model and no I/O, so the
local grounding scorer stays cheap and these pieces can be tested with property tests.

    >>> split_sentences("Dr. Smith paid $5.5 million. It rose 3%.")
    ['Dr. Smith paid $5.5 million.', 'It rose 3%.']
    >>> sorted(extract_numbers("about 50k, i.e. $50,000 in 2019"))
    ['2019', '50000']
"""

from __future__ import annotations

import re
from functools import lru_cache


# Tokens ending in a period that do not end a sentence.
def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


_ABBREVIATIONS = _wordset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e eg ie inc ltd co corp no fig approx "
    "dept est gen gov jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k a.m p.m "
    "mt ft lb lbs oz vol ca cf al"
)

_WORD_RE = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_BULLET_RE = re.compile(r"^\s*(?:[-*•·‣◦]|\d{1,2}[.)]|[a-z][.)])\s+", re.IGNORECASE)
_CANDIDATE_END_RE = re.compile(r"[.!?…]+[\"')\]]*\s+")

STOPWORDS = _wordset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves may might must shall also however therefore thus often usually
    generally typically include includes including such like well one two many much"""
)

NEGATIONS = _wordset(
    "not no never none nobody nothing neither nor cannot can't don't doesn't didn't isn't "
    "aren't wasn't weren't won't wouldn't shouldn't couldn't without lack lacks"
)

_MONTH_ORDER = "janfebmaraprmayjunjulaugsepoctnovdec"
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        sorted(
            _wordset(
                "january february march april may june july august september october "
                "november december"
            ),
            key=lambda m: _MONTH_ORDER.index(m[:3]),
        )
    )
}
_MONTHS.update({m[:3]: i for m, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9

SCALES = {  # scale words after a number (also judges.evidence)
    "k": 1e3,
    "thousand": 1e3,
    "m": 1e6,
    "mn": 1e6,
    "million": 1e6,
    "b": 1e9,
    "bn": 1e9,
    "billion": 1e9,
    "trillion": 1e12,
}
_NUMBER_RE = re.compile(
    r"(?<![\w.])[$€£]?\s?(\d{1,3}(?:[,\u00a0 ]\d{3})+|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s?(k|thousand|mn|m|million|bn|b|billion|trillion)\b)?",
    re.IGNORECASE,
)
_DATE_RE = re.compile(
    r"\b(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?\s+(\d{1,2})(?:st|nd|rd|th)?"
    r"(?:,?\s+(\d{4}))?\b|\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?("
    + "|".join(sorted(_MONTHS, key=len, reverse=True))
    + r")\.?(?:,?\s+(\d{4}))?\b",
    re.IGNORECASE,
)
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        re.findall(
            r"\w+",
            "zero one two three four five six seven eight nine ten eleven twelve "
            "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty",
        )
    )
}
_ENTITY_RE = re.compile(r"\b[A-Z][\w’'&.-]*(?:\s+(?:of|de|the|and|&)?\s*[A-Z][\w’'&.-]*)*")


def normalize_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def split_sentences(text: str) -> list[str]:
    """Split into sentences; list items and lines are their own units.

    Newlines end a unit first (answers are often bullet lists), then `.!?` followed by
    whitespace, unless the period belongs to an abbreviation, an initial or a decimal.
    """
    out: list[str] = []
    for line in text.splitlines():
        line = _BULLET_RE.sub("", line).strip()
        if not line:
            continue
        start = 0
        for m in _CANDIDATE_END_RE.finditer(line):
            if _is_false_end(line, m.start()) or m.end() >= len(line):
                continue
            out.append(line[start : m.end()].strip())
            start = m.end()
        if line[start:].strip():
            out.append(line[start:].strip())
    return [s for s in out if any(ch.isalnum() for ch in s)]


def _is_false_end(line: str, dot: int) -> bool:
    if line[dot] != ".":
        return False
    # Only the token before the dot matters: look at a bounded tail so a long line stays linear.
    word = re.search(r"([\w.]+)$", line[max(0, dot - 64) : dot])
    if word is None:
        return False
    token = word.group(1).lower()
    # Single capital letter ("J. Smith") or a known abbreviation.
    if token in _ABBREVIATIONS or (len(token) == 1 and line[dot - 1].isupper()):
        return True
    nxt = line[dot + 1 :].lstrip()
    # "e.g. the" — a lowercase continuation means the sentence did not end.
    return bool(nxt) and nxt[0].islower() and token.count(".") > 0


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens (letters/digits, with simple apostrophes)."""
    return _WORD_RE.findall(text.lower().replace("’", "'"))


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix stripper: enough to match "cleaning"/"cleans"/"cleaned" to "clean"."""
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix in (
        "ations",
        "ation",
        "ingly",
        "ings",
        "ing",
        "edly",
        "ies",
        "ied",
        "ed",
        "es",
        "ly",
        "s",
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                return base + "y"
            return base
    return word


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (one big-int operation per token of `a`, Hyyrö's formulation), so a claim
    against a long window costs len(a) integer operations instead of len(a)·len(b) steps.
    """
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def content_words(text: str) -> list[str]:
    """Stemmed tokens that carry meaning (no stopwords, no 1-letter tokens)."""
    return [stem(t) for t in tokenize(text) if t not in STOPWORDS and len(t) > 1]


def has_negation(text: str) -> bool:
    toks = tokenize(text)
    return any(t in NEGATIONS or t.endswith("n't") for t in toks)


def format_number(value: float) -> str:
    """Canonical string for a number: integers without decimals, others to 6 significant."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def parse_number(raw: str, scale: str | None = None) -> float | None:
    """'50,000' / '50 000' / '50k' / '$5.5 million' → float; None if not a number."""
    digits = re.sub(r"[,\u00a0 $€£]", "", raw)
    try:
        value = float(digits)
    except ValueError:
        return None
    if scale:
        value *= SCALES[scale.lower()]
    return value


def extract_numbers(text: str) -> set[str]:
    """Canonical numbers in `text` (amounts, percentages, years, dates as 'm-d').

    Dates become 'month-day' (plus the year as its own number) so that "March 5" and
    "5 March 2020" agree; small number words ("three") count as numbers too.
    """
    found: set[str] = set()
    rest = text
    for m in _DATE_RE.finditer(text):
        month = m.group(1) or m.group(5)
        day = m.group(2) or m.group(4)
        year = m.group(3) or m.group(6)
        found.add(f"{_MONTHS[month.lower()]}-{int(day)}")
        if year:
            found.add(year)
        rest = rest.replace(m.group(0), " ")
    for m in _NUMBER_RE.finditer(rest):
        value = parse_number(m.group(1), m.group(2))
        if value is not None:
            found.add(format_number(value))
    for tok in tokenize(text):
        if tok in _NUMBER_WORDS:
            found.add(str(_NUMBER_WORDS[tok]))
    return found


def extract_entities(text: str) -> set[str]:
    """Lowercased capitalised spans, ignoring the capital that only starts a sentence.

    A crude proper-noun detector: good enough to notice a name, product or place that the
    context never mentions.
    """
    found: set[str] = set()
    for sent in split_sentences(text):
        for m in _ENTITY_RE.finditer(sent):
            span = m.group(0).strip(" .-'’")
            words = span.split()
            if m.start() == 0 or sent[: m.start()].rstrip().endswith((":", '"', "(")):
                # Sentence-initial capital: keep only if the next word is capitalised too.
                if len(words) < 2:
                    continue
                if words[0].lower() in STOPWORDS:
                    words = words[1:]
            span = " ".join(words)
            if span and span.lower() not in STOPWORDS and len(span) > 1:
                found.add(span.lower())
    return found
