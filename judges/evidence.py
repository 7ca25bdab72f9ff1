"""Hard evidence: the numbers, amounts, percentages, dates and names a sentence asserts.

Pure functions, no model, no I/O. Values are compared after normalisation, never as strings:

    >>> [v.key for v in extract_values("Enterprise: $50k a year, up 12 percent.")]
    ['money:usd:50000', 'percent:12']
    >>> [v.key for v in extract_values("on 3 March 2021")] == [
    ...     v.key for v in extract_values("on 2021-03-03")]
    True
    >>> check_values(extract_values("It costs $5,000."), extract_values("It costs $50,000.", True))
    ([], ['$5,000'])

A value in the claim is *supported* when the contexts hold an equal value of a compatible kind
(rounding to the precision the claim wrote is allowed: "$5.5 million" matches 5,470,000),
*contradicted* when the contexts hold values of the same kind but none equal, and *missing*
otherwise. Context-side extraction is liberal ("one", "third" count), claim-side
conservative, so the asymmetry errs towards not flagging.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from judges.text import SCALES, STOPWORDS, extract_entities, split_sentences, stem, tokenize


def _words(text: str) -> list[str]:
    return text.split()


_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        _words(
            "january february march april may june july august september october november december"
        )
    )
}
_MONTHS.update({m[:3]: i for m, i in list(_MONTHS.items())} | {"sept": 9})
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_TENS = {
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
}
_DETERMINERS = (["the"], ["these"], ["those"], ["both"], ["all"], ["of"])
_ORDINALS = {
    w: i + 1
    for i, w in enumerate(
        _words("first second third fourth fifth sixth seventh eighth ninth tenth")
    )
}
_NUMBER_WORDS = {w: i for i, w in enumerate(_WORDS)} | _TENS
# "one" and "zero" are too often not numbers ("one of them"): they only ever support.
_CLAIM_WORDS = {w: v for w, v in _NUMBER_WORDS.items() if v >= 2}
_CURRENCY = {
    "$": "usd",
    "us$": "usd",
    "€": "eur",
    "£": "gbp",
    "¥": "jpy",
    "dollar": "usd",
    "dollars": "usd",
    "usd": "usd",
    "euro": "eur",
    "euros": "eur",
    "eur": "eur",
    "pound": "gbp",
    "pounds": "gbp",
    "gbp": "gbp",
}
_WORD_NUM = "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))

_DATE_MDY = re.compile(
    rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}})\b)?", re.I
)
_DATE_DMY = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_RE})\b\.?(?:,?\s+(\d{{4}})\b)?", re.I
)
_DATE_MY = re.compile(rf"\b({_MONTH_RE})\.?,?\s+(\d{{4}})\b", re.I)
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_DATE_SLASH = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_AMOUNT = re.compile(
    r"(?<![\w.])(us\$|[$€£¥])?\s?(\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?|\.\d+|(?:"
    + _WORD_NUM
    + r")\b)"
    r"(?:\s?(k|thousand|mn|m|million|bn|b|billion|trillion)\b)?"
    r"(?:\s?(%|percent\b|per\s?cent\b|dollars?\b|usd\b|euros?\b|eur\b|pounds?\b|gbp\b))?",
    re.I,
)
_LABEL_RE = re.compile(r"^[A-Z][\w ,&/'-]{0,40}:\s+")
# Numbers that point into the answer's own structure or the sources, not at the world.
_POINTER_RE = re.compile(
    r"\b(?:passages?|steps?|sources?|documents?|docs?|paragraphs?|sections?|options?|items?|"
    r"points?|parts?|tips?|methods?|reasons?|ways?|references?|questions?|#)\s*\d+(?:\s*(?:,|and|&|-)\s*\d+)*",
    re.I,
)
_NOT_NAMES = (
    set(_MONTHS)
    | {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
    | {"passage", "passages", "step", "note", "fahrenheit", "celsius", "com", "org", "www"}
)
_UNIT_RE = re.compile(
    r"\s*(?:(°\s?[cf]\b|degrees?\s+(?:celsius|fahrenheit|[cf])\b|celsius|fahrenheit)"
    r"|(km|kilomet(?:er|re)s?|miles?|mi|cm|centimet(?:er|re)s?|inch(?:es)?|in\.|feet|foot|ft"
    r"|yards?|met(?:er|re)s?)\b|(kg|kilograms?|lbs?|pounds|grams?|g|ounces?|oz)\b)",
    re.I,
)
# Conversions an answer may add in brackets ("58 °F (14 °C)"): factors within a family.
_FACTORS = {
    "length": (1.609344, 0.3048, 2.54, 0.9144, 1000.0, 100.0, 30.48, 91.44, 12.0, 3.0),
    "mass": (2.20462, 0.453592, 28.3495, 1000.0, 16.0),
}
_DOTTED_RE = re.compile(r"\b(?:[A-Za-z]\.){2,}")
_MIXED_CASE_RE = re.compile(r"\b[a-z]+[A-Z][A-Za-z]*\b")
_ORDINAL_RE = re.compile(r"\b(" + "|".join(_ORDINALS) + r")\b", re.I)


@dataclass(frozen=True, slots=True)
class Value:
    """One asserted value. `kind`: number, money, percent, date, entity."""

    kind: str
    text: str
    amount: float | None = None  # numbers, money, percent
    step: float = 0.0  # the rounding step the text implies ("5.5 million" → 100,000)
    unit: str = ""  # currency for money
    date: tuple[int | None, int | None, int | None] | None = None  # (year, month, day)

    @property
    def key(self) -> str:
        if self.kind == "date" and self.date is not None:
            return "date:" + "-".join("?" if p is None else str(p) for p in self.date)
        if self.amount is not None:
            num = f"{self.amount:.6g}" if self.amount != int(self.amount) else str(int(self.amount))
            return ":".join(p for p in (self.kind, self.unit, num) if p)
        return f"{self.kind}:{self.text.lower()}"


def _date(y: str | None, m: int | None, d: str | int | None, text: str) -> Value | None:
    day = int(d) if d is not None else None
    if m is None or not 1 <= m <= 12 or (day is not None and not 1 <= day <= 31):
        return None
    return Value("date", text, date=(int(y) if y else None, m, day))


def _dates(text: str) -> tuple[list[Value], str]:
    """Dates in `text`, and the text with them blanked so their digits are not re-read."""
    found: list[tuple[int, Value]] = []
    taken: list[tuple[int, int]] = []
    used = bytearray(len(text))  # characters already read as part of a date

    def add(m: re.Match[str], value: Value | None) -> None:
        if value is None or any(used[m.start() : m.end()]):
            return
        used[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
        taken.append((m.start(), m.end()))
        found.append((m.start(), value))

    for m in _DATE_ISO.finditer(text):
        add(m, _date(m[1], int(m[2]), m[3], m[0]))
    for m in _DATE_SLASH.finditer(text):  # US order first; 13/02/2021 can only be d/m
        a, b = int(m[1]), int(m[2])
        add(m, _date(m[3], a, b, m[0]) if a <= 12 else _date(m[3], b, a, m[0]))
    for m in _DATE_MDY.finditer(text):
        add(m, _date(m[3], _MONTHS[m[1].lower()], m[2], m[0]))
    for m in _DATE_DMY.finditer(text):
        add(m, _date(m[3], _MONTHS[m[2].lower()], m[1], m[0]))
    for m in _DATE_MY.finditer(text):
        add(m, _date(m[2], _MONTHS[m[1].lower()], None, m[0]))
    blanked = "".join(" " if u else ch for ch, u in zip(text, used, strict=True))
    return [v for _, v in sorted(found, key=lambda p: p[0])], blanked


def _step(raw: str, scale: float) -> float:
    """Rounding step implied by how the number was written: '5.5' → 0.1, '50' → 1."""
    decimals = len(raw.split(".")[1]) if "." in raw else 0
    return scale * 10.0**-decimals


def _amounts(text: str, liberal: bool) -> list[Value]:
    words = _NUMBER_WORDS if liberal else _CLAIM_WORDS
    out = []
    for m in _AMOUNT.finditer(text):
        cur, raw, scale_word, suffix = m[1], m[2], m[3], (m[4] or "").lower()
        if raw.lower() in _NUMBER_WORDS:
            before = text[max(0, m.start() - 7) : m.start()].lower().split()
            if raw.lower() not in words or (not liberal and before[-1:] in _DETERMINERS):
                continue
            base, digits = float(words[raw.lower()]), "0"
        else:
            digits = raw.replace(",", "")
            base = float(digits)
        scale = SCALES[scale_word.lower()] if scale_word else 1.0
        if scale_word and scale_word.lower() in ("m", "b") and not cur and not suffix:
            # "5m" may be 5 metres or 5 million: a claim asserts neither, a context offers both.
            if liberal:
                out.append(Value("number", m[0].strip(), base, _step(digits, 1.0)))
            else:
                continue
        amount = base * scale
        if suffix == "%" or suffix.startswith("per"):
            out.append(Value("percent", m[0].strip(), amount, _step(digits, scale)))
        elif cur or suffix:
            unit = _CURRENCY.get((cur or suffix).lower(), "")
            out.append(Value("money", m[0].strip(), amount, _step(digits, scale), unit))
        else:
            u = _UNIT_RE.match(text, m.end())
            family = (
                ""
                if u is None
                else ("temp", "length", "mass")[
                    [*u.groups()].index(next(g for g in u.groups() if g))
                ]
            )
            out.append(Value("number", m[0].strip(), amount, _step(digits, scale), family))
    if liberal:
        out += [
            Value("number", m[0], float(_ORDINALS[m[0].lower()]))
            for m in _ORDINAL_RE.finditer(text)
        ]
    return out


def _compounds(text: str) -> str:
    """'twenty-five' → '25' so it is one number, not 20 and 5."""
    units = "|".join(_WORDS[1:10])
    tens = "|".join(w for w in _TENS if w != "hundred") + "|twenty"
    return re.sub(
        rf"\b({tens})[- ]({units})\b",
        lambda m: str(_NUMBER_WORDS[m[1].lower()] + _NUMBER_WORDS[m[2].lower()]),
        text,
        flags=re.I,
    )


def _claim_entities(text: str) -> set[str]:
    """Names a claim asserts: capitalised spans, minus the capital a position explains."""
    found: set[str] = set()
    for sent in split_sentences(text):
        sent = _LABEL_RE.sub("", sent)  # "Side Effects: …" is a heading, not a name
        for ent in extract_entities(sent):
            words = ent.split()
            if len(words) > 1 and sent.lower().startswith(ent):
                words = words[1:]  # "Check the French Pages": the first capital is positional
            while words and words[0] in STOPWORDS:
                words = words[1:]
            if words:
                found.add(" ".join(words))
    return found | {m[0].lower() for m in _MIXED_CASE_RE.finditer(text)}  # iPad, eBay


def _entities(text: str) -> list[Value]:
    return [
        Value("entity", e)
        for e in sorted(_claim_entities(text))
        if not any(c.isdigit() for c in e) and not set(e.split()) & _NOT_NAMES
    ]


def extract_values(text: str, liberal: bool = False) -> list[Value]:
    """Dates, amounts, percentages, numbers and (claim side) named entities in `text`.

    `liberal=True` is for contexts: it also reads "one", "zero" and ordinals as numbers, and
    skips entities (a context's names are matched against its words, see `check_values`).
    """
    text = _compounds(text)
    if not liberal:
        text = _POINTER_RE.sub(" ", text)
    dates, rest = _dates(text)
    values = dates + _amounts(rest, liberal)
    if liberal:  # a date's year and day also support a bare number ("in 1977")
        values += [
            Value("number", v.text, float(p))
            for v in dates
            if v.date
            for p in (v.date[0], v.date[2])
            if p is not None
        ]
    return values if liberal else values + _entities(text)


def _same_amount(claim: Value, ctx: Value) -> bool:
    if claim.amount is None or ctx.amount is None:
        return False
    if abs(claim.amount - ctx.amount) <= 1e-9 * max(1.0, abs(ctx.amount)):
        return True
    # The claim rounded the context's figure to the precision it wrote.
    return claim.step > 0 and abs(claim.amount - ctx.amount) <= claim.step / 2 + 1e-9


def _compatible(claim: Value, ctx: Value) -> bool:
    if claim.kind == "number":
        return ctx.kind in ("number", "money", "percent")
    if claim.kind == "money":
        return ctx.kind == "number" or (ctx.kind == "money" and claim.unit == ctx.unit)
    return ctx.kind in (claim.kind, "number")


class ValueIndex:
    """Context values indexed by amount and by month, so a check costs O(log n), not O(n)."""

    def __init__(self, values: list[Value]) -> None:
        amounts = sorted((v.amount, i) for i, v in enumerate(values) if v.amount is not None)
        self.values = values
        self.keys = [a for a, _ in amounts]
        self.order = [i for _, i in amounts]
        self.kinds = {(v.kind, v.unit) for v in values}
        self.by_month: dict[int | None, list[Value]] = {}
        for v in values:
            if v.date is not None:
                self.by_month.setdefault(v.date[1], []).append(v)
        self.years = {v.amount for v in values if v.kind == "number"}
        self.years |= {float(v.date[0]) for v in values if v.date and v.date[0]}

    def near(self, amount: float, tolerance: float) -> list[Value]:
        lo = bisect.bisect_left(self.keys, amount - tolerance)
        hi = bisect.bisect_right(self.keys, amount + tolerance)
        return [self.values[self.order[i]] for i in range(lo, hi)]

    def supports_amount(self, claim: Value) -> bool:
        assert claim.amount is not None
        tol = claim.step / 2 + 1e-9 * max(1.0, abs(claim.amount))
        if any(
            _compatible(claim, v) and _same_amount(claim, v) for v in self.near(claim.amount, tol)
        ):
            return True
        return self._converted(claim)

    def _converted(self, claim: Value) -> bool:
        """Whether a number with a unit is a (roughly rounded) conversion of a context number."""
        if claim.amount is None or claim.unit not in ("temp", *_FACTORS):
            return False
        x = claim.amount
        if claim.unit == "temp":
            sources = [x * 9 / 5 + 32, (x - 32) * 5 / 9]  # the context figure it came from
        else:
            sources = [x / f for f in _FACTORS[claim.unit]] + [x * f for f in _FACTORS[claim.unit]]
        return any(
            v.kind == "number" for src in sources for v in self.near(src, max(2.0, 0.06 * abs(src)))
        )

    def supports_date(self, claim: Value) -> bool:
        assert claim.date is not None
        y, m, d = claim.date
        for v in self.by_month.get(m, []):
            assert v.date is not None
            if d is not None and v.date[2] != d:
                continue
            if y is None or v.date[0] == y or (v.date[0] is None and float(y) in self.years):
                return True
        return False


def _entity_supported(entity: str, ctx_words: set[str], initials: set[str]) -> bool:
    words = [w for w in tokenize(entity) if w not in STOPWORDS]
    if not words:
        return True
    stems = {stem(w.removesuffix("'s")) for w in words}
    acronym = "".join(w[0] for w in words)  # "Bureau of Labor Statistics" ↔ "BLS"
    joined = entity.replace(".", "").replace(" ", "")  # "US" ↔ "United States", "U.S."
    return (
        stems <= ctx_words
        or joined in initials
        or joined in ctx_words
        or (len(words) > 1 and (acronym in ctx_words or stem(acronym + "s") in ctx_words))
    )


def context_index(text: str) -> tuple[list[Value], set[str], set[str]]:
    """What claims are checked against: liberal values, stemmed words, acronyms of names."""
    words = {stem(w.removesuffix("'s")) for w in tokenize(text)}
    words |= {m[0].replace(".", "").lower() for m in _DOTTED_RE.finditer(text)}  # U.S. → us
    initials = {"".join(w[0] for w in e.split()) for e in extract_entities(text) if " " in e}
    return extract_values(text, liberal=True), words, initials


def check_values(
    claim: list[Value],
    ctx_values: list[Value] | ValueIndex,
    ctx_words: set[str] | None = None,
    initials: set[str] | None = None,
) -> tuple[list[str], list[str]]:
    """(missing, contradicted) surface forms of the claim's values, each in claim order."""
    index = ctx_values if isinstance(ctx_values, ValueIndex) else ValueIndex(ctx_values)
    missing: list[str] = []
    contradicted: list[str] = []
    for value in claim:
        if value.kind == "entity":
            if ctx_words is not None and not _entity_supported(
                value.text, ctx_words, initials or set()
            ):
                missing.append(value.text)
            continue
        if value.kind == "date":
            ok = index.supports_date(value)
            rivals = bool(index.by_month)
        else:
            ok = index.supports_amount(value)
            rivals = (value.kind, value.unit) in index.kinds
        if not ok:
            (contradicted if rivals else missing).append(value.text)
    return missing, contradicted
