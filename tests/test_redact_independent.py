"""The redactor on the independent corpus: every secret/PII case caught, every benign text
untouched. No allowance: a case either passes or is listed in LIMITS with its reason in docs/operations/security.md
(and then counts as a miss in bench/redaction.py). Plus seeded checks of the number decisions
and of the normalised view (what is not redacted comes back byte for byte)."""

from __future__ import annotations

import random
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from judges.redact import Redactor
from judges.redact_numbers import luhn_ok

from .redaction_independent import Case, caught, false_positive, leaked, load

# Documented limits (docs/operations/security.md, "Redaction limits"): case id -> reason. Empty: every case passes.
LIMITS: dict[str, str] = {}

CASES = load()
POSITIVE = [c for c in CASES if not c.benign]
BENIGN = [c for c in CASES if c.benign]


def test_the_corpus_is_what_the_issue_asked_for() -> None:
    assert len(BENIGN) >= 500 and len(POSITIVE) >= 150
    assert len({c.id for c in CASES}) == len(CASES)
    for c in POSITIVE:
        assert c.source and c.kinds and all(s in c.text for s in c.secrets), c.id
    families = {c.family for c in POSITIVE}
    assert {"aws", "azure", "sendgrid", "npm", "twilio", "jwt", "obfuscated", "ssn"} <= families
    assert set(LIMITS) <= {c.id for c in CASES}


@pytest.mark.parametrize("case", [c for c in POSITIVE if c.id not in LIMITS], ids=lambda c: c.id)
def test_every_secret_is_caught(case: Case) -> None:
    out = Redactor().text(case.text)
    assert not leaked(case, out), out
    assert caught(case, out), f"no placeholder of {case.kinds}: {out!r}"


def test_every_benign_text_survives() -> None:
    changed = [(c.id, out) for c in BENIGN if false_positive(c, out := Redactor().text(c.text))]
    assert changed == []


def test_the_leak_rule_sees_a_half_redacted_secret() -> None:
    # The scorer must be able to fail: a key cut in two, or a zero-width space left in it.
    case = next(c for c in POSITIVE if c.id == "obfuscated-007")
    secret = case.secrets[0]
    half = case.text.replace(secret.split("\n")[0], "[API_KEY_1]")
    assert leaked(case, half) and not caught(case, half)
    assert not false_positive(BENIGN[0], BENIGN[0].text)


# --- seeded checks of the number decisions ----------------------------------------------


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _card_number(rng: random.Random, *, luhn: bool) -> str:
    while True:
        d = rng.choice("3456") + _digits(rng, 15)
        if luhn_ok(d) == luhn:
            return d


@pytest.mark.parametrize("seed", range(3))
def test_card_groupings_are_cards_whatever_luhn_says(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        d = _card_number(rng, luhn=rng.random() < 0.5)
        sep = rng.choice(" .-")
        grouped = sep.join(d[i : i + 4] for i in range(0, 16, 4))
        assert grouped not in Redactor().text(f"Paid with {grouped} yesterday.")
        # An identifier word right before it: a reference number, unless Luhn says card.
        kept = f"Reference {grouped} attached."
        assert (grouped in Redactor().text(kept)) == (not luhn_ok(d))


@pytest.mark.parametrize("seed", range(3))
def test_bare_luhn_failing_runs_need_a_card_word(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        d = _card_number(rng, luhn=False)
        assert d in Redactor().text(f"Batch {d} imported.")
        assert d in Redactor().text(f"Imported {d} rows? no: {d}.")
        assert d not in Redactor().text(f"card {d} declined")


@pytest.mark.parametrize("seed", range(3))
def test_ssn_rules(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        area = rng.choice([a for a in range(1, 900) if a != 666])
        ssn = f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        assert ssn not in Redactor().text(f"Please verify {ssn} today.")
        spaced = ssn.replace("-", " ")
        assert spaced not in Redactor().text(f"SSN {spaced}")
        bad = f"{rng.choice([0, 666, rng.randint(900, 999)]):03d}" + ssn[3:]
        assert bad in Redactor().text(f"Please verify {bad} today.")
        assert ssn in Redactor().text(f"Order {ssn} shipped.")


@pytest.mark.parametrize("seed", range(3))
def test_unix_times_and_ids_survive_neutral_words(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        ts = str(rng.randint(1_000_000_000, 1_999_999_999))
        oid = str(rng.randint(10**8, 10**9 - 1))  # 9 digits: SSN-sized
        text = f"At {ts} the worker logged {oid} items."
        assert Redactor().text(text) == text


# --- the normalised view ----------------------------------------------------------------

_ODD = st.sampled_from(
    ["\u200b", "\u200d", "\ufeff", "\u00ad", "＠", "ｊ", "１", "ﬁ", "²", "\ue000", "é", "e\u0301"]
)
_PIECES = st.one_of(
    _ODD,
    st.sampled_from(["jane", "@", "example.com", " ", "4111 1111 1111 1111", "ghp_", "x" * 36]),
    st.text(max_size=8),
)


@given(st.lists(_PIECES, max_size=14).map("".join))
def test_what_is_not_redacted_comes_back_unchanged(text: str) -> None:
    out = Redactor().text(text)
    pieces = re.split(r"\[[A-Z_]+_\d+\]", out)
    pos = 0
    for piece in pieces:  # the kept pieces, in order, are verbatim slices of the input
        found = text.find(piece, pos)
        assert found != -1, (text, out)
        pos = found + len(piece)


def test_full_width_and_zero_width_forms_share_one_placeholder() -> None:
    r = Redactor()
    assert r.text("jane@example.com") == r.text("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ") == "[EMAIL_1]"
    assert r.text("jane\u200b@example.com") == "[EMAIL_1]"
