"""Contexts as evidence: prose sentences or structured-record fields, indexed once per answer.

A context that is a JSON object or list (a data-to-text record, a tool result) is read as
fields, one evidence unit per field ("stars: 4") plus one per record, so claims are matched
against field names and values instead of JSON punctuation:

    >>> record_units('{"name": "Hotel Adria", "starRating": 4, "has_pool": false}')[:3]
    ['name: Hotel Adria', 'star rating: 4', 'has pool: no']

The index is linear in the context size: terms map to the windows that hold them, so a
claim's best window is found from its terms' postings, never by scanning every window.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass

from judges.evidence import Value, context_index
from judges.text import content_words, split_sentences, stem, tokenize

# Content words within this distance in a context count as related (a claim's adjacent pair).
PAIR_SPAN = 3
# A term in more windows than this is too common to pick candidate windows by.
COMMON_POSTINGS = 64

_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def clean_artifacts(text: str) -> str:
    """Undo tokenisation artefacts of research data and scraped text (`world\\'s`, ` 's`, UNK)."""
    text = text.replace("\\'", "'").replace("-LRB-", "(").replace("-RRB-", ")")
    text = re.sub(r"\[UNK\]|\bUNK\b", " ", text)
    text = re.sub(r"(?<![\d,])(\d{1,3}), (\d{3})\b", r"\1,\2", text)  # "£50, 000"
    text = re.sub(r"\b(\w) ' (\w)", r"\1'\2", text)  # "O ' Sullivan"
    text = re.sub(r"\s+(['’]s|n't)\b", r"\1", text)
    return re.sub(r"\s+([,.;:!?%])", r"\1", text)


def _humanise(key: str) -> str:
    return _CAMEL_RE.sub(" ", key).replace("_", " ").replace("-", " ").lower().strip()


def _scalar(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def record_units(text: str) -> list[str] | None:
    """Evidence units of a JSON context (fields, then whole records); None if not JSON."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    fields: list[str] = []
    records: list[str] = []

    def walk(node: object, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            own = []
            for key, value in node.items():
                sub = (*path, _humanise(str(key)))
                if isinstance(value, dict | list):
                    walk(value, sub)
                elif (shown := _scalar(value)) is not None:
                    fields.append(f"{' '.join(sub[-2:])}: {shown}")
                    own.append(f"{sub[-1]}: {shown}")
            if len(own) > 1:
                records.append("; ".join(own))
        elif isinstance(node, list):
            scalars = [s for s in map(_scalar, node) if s is not None and not isinstance(s, dict)]
            if scalars and all(not isinstance(v, dict | list) for v in node):
                fields.append(f"{' '.join(path[-2:])}: {', '.join(scalars)}")
            else:
                for item in node:
                    walk(item, path)
        elif (shown := _scalar(node)) is not None:
            fields.append(f"{' '.join(path[-2:])}: {shown}".strip(": "))

    walk(data, ())
    return fields + records


def context_units(text: str) -> list[str]:
    """Sentences of a prose context, or fields and records of a JSON one."""
    units = record_units(text)
    if units is not None:
        return units
    text = clean_artifacts(text)
    return split_sentences(text) or [text]


@dataclass(frozen=True, slots=True)
class ContextIndex:
    """Everything a claim is checked against, built once per answer."""

    windows: list[tuple[str, str]]  # (context id, text): units and adjacent pairs of units
    postings: dict[str, list[int]]  # term → windows holding it
    window_terms: list[frozenset[str]]
    terms: frozenset[str]
    words: frozenset[str]  # all stemmed tokens, for names
    pairs: frozenset[tuple[str, str]]  # unordered content-word pairs within PAIR_SPAN
    trigrams: frozenset[tuple[str, ...]]  # word trigrams (stopwords too): copied phrasing
    values: list[Value]
    initials: set[str]

    def best_window(self, terms: set[str]) -> tuple[int, int]:
        """(window, shared terms) of the window sharing most terms; (-1, 0) if none shares any.

        Candidates come from the claim's rarer terms (postings up to COMMON_POSTINGS long), so
        a term found in every window ("acme") costs nothing per claim and the search stays
        linear in the input; common terms still count once a window is a candidate.
        """
        found = [t for t in terms if t in self.postings]
        if not found:
            return -1, 0
        rare = [t for t in found if len(self.postings[t]) <= COMMON_POSTINGS]
        common = [t for t in found if len(self.postings[t]) > COMMON_POSTINGS]
        hits: dict[int, int] = defaultdict(int)
        for term in rare:
            for w in self.postings[term]:
                hits[w] += 1
        if not hits:  # only common terms: any of their windows will do
            hits = dict.fromkeys(self.postings[common[0]][:COMMON_POSTINGS], 0)
        for w in hits:
            hits[w] += sum(t in self.window_terms[w] for t in common)
        best = max(hits, key=lambda w: (hits[w], -w))
        return best, hits[best]


def trigrams_of(text: str) -> list[tuple[str, ...]]:
    toks = [stem(t) for t in tokenize(text)]
    return list(zip(toks, toks[1:], toks[2:], strict=False))


def build_index(contexts: list[tuple[str, str]], drop: frozenset[str]) -> ContextIndex:
    """Index (id, text) contexts; `drop` are terms that never count as content (attribution)."""
    windows: list[tuple[str, str]] = []
    pairs: set[tuple[str, str]] = set()
    all_units: list[str] = []
    trigrams: set[tuple[str, ...]] = set()
    for cid, text in contexts:
        units = context_units(text)
        all_units += units
        for i, unit in enumerate(units):
            windows.append((cid, unit))
            if i + 1 < len(units):
                windows.append((cid, f"{unit} {units[i + 1]}"))
            trigrams.update(trigrams_of(unit))
            seq = [t for t in content_words(unit) if t not in drop]
            for j, a in enumerate(seq):
                for b in seq[j + 1 : j + 1 + PAIR_SPAN]:
                    pairs.add((a, b) if a <= b else (b, a))
    postings: dict[str, list[int]] = defaultdict(list)
    window_terms = []
    for w, (_, text) in enumerate(windows):
        terms = frozenset(t for t in content_words(text) if t not in drop)
        window_terms.append(terms)
        for t in terms:
            postings[t].append(w)
    values, words, initials = context_index("\n".join(all_units))
    return ContextIndex(
        windows=windows,
        postings=dict(postings),
        window_terms=window_terms,
        terms=frozenset(postings),
        words=frozenset(words),
        pairs=frozenset(pairs),
        trigrams=frozenset(trigrams),
        values=values,
        initials=initials,
    )
