from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from judges.redact import Redactor, redact_case
from judges.types import Context, EvalCase

SECRETS = {
    "EMAIL": "jane.doe+billing@example.co.uk",
    "PHONE": "+1 (415) 555-0132",
    "CARD": "4111 1111 1111 1111",
    "API_KEY": "sk-proj-Abcdefghijklmnopqrstuvwx1234",
    "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


@pytest.mark.parametrize(("kind", "secret"), list(SECRETS.items()))
def test_each_kind_is_replaced(kind: str, secret: str) -> None:
    out = Redactor().text(f"Contact: {secret} today.")
    assert secret not in out
    assert f"[{kind}_1]" in out


def test_aws_keys_are_redacted() -> None:
    out = Redactor().text(
        "AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    )
    assert "AKIAIOSFODNN7EXAMPLE" not in out and "wJalrXUtnFEMI" not in out


@pytest.mark.parametrize(
    "text",
    [
        "The enterprise plan costs $50,000 per year.",
        "Revenue grew 12.5% in 2023-2024 to 1,554 units.",
        "Call order 123456789012 is not a card (fails Luhn).",
        "Population: 8 336 817 in 2022.",
    ],
)
def test_ordinary_numbers_survive(text: str) -> None:
    assert Redactor().text(text) == text


def test_same_value_gets_the_same_placeholder_across_the_case() -> None:
    email = SECRETS["EMAIL"]
    case = EvalCase(
        trace_id="t",
        span_id="s",
        question=f"What is {email}?",
        answer=f"It is {email}.",
        contexts=(Context(id="d", text=f"Owner: {email}; other: bob@example.com"),),
        messages=({"role": "user", "parts": [{"type": "text", "content": f"mail {email}"}]},),
        samples=(f"maybe {email}",),
    )
    red = redact_case(case)
    blob = repr(red)
    assert email not in blob and "bob@example.com" not in blob
    assert red.answer == "It is [EMAIL_1]."
    assert "[EMAIL_1]" in red.contexts[0].text and "[EMAIL_2]" in red.contexts[0].text
    assert red.messages[0]["parts"][0]["content"] == "mail [EMAIL_1]"


@given(st.text(max_size=200))
def test_redaction_is_idempotent(text: str) -> None:
    once = Redactor().text(text)
    assert Redactor().text(once) == once


# Pieces that make or nearly make every kind, the letters `re` folds onto ASCII under
# IGNORECASE (long s, Kelvin sign, dotted I) and digit runs with phone separators.
_PIECES = st.sampled_from(
    [
        "password=",
        "PaſſWORD: hunter2hunter2",
        "pwd=hunter2hunter2",
        "api_key = ",
        "Api\u212aey: hunter2hunter2",
        "sessİon_token=",
        "aws_secret_access_key: ",
        "Bearer abcdefghijklmnopqrstu",
        "authorization: Basic dXNlcjpwYXNz",
        "client_secret: hunter2hunter2",
        "refresh_token=hunter2hunter2",
        "hunter2hunter2",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "DE89370400440532013000",
        "4111 1111 1111 1111",
        "(415) 555-0132",
        "+44 20 7946 0958",
        "1700000000",
        " call ",
        " order ",
        "sk-",
        "gh",
        "ghp_",
        "@",
        "x",
        "1",
        " ",
        "\n",
        '"',
        "é",
        # The gates added with the token families, SSNs and the normalised view.
        "SG.",
        "xoxb-",
        ":AA",
        "AccountKey=",
        "X-API-Key: ",
        "Bearer ",
        "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7b",
        "SK0123456789abcdef0123456789abcdef",
        "536-22-8714",
        "SSN ",
        "4111.1111.1111.1112",
        "ch93 0076 2011 6238 5295 7",
        "ＡＫＩＡ",
        "\u200b",
        "my password is ",
        "[at]",
        "_",
        "-",
    ]
)


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_skipping_kinds_by_their_literals_never_changes_the_result(text: str) -> None:
    # The shortcut (a kind runs only when its literal or gate is in the text) must redact
    # exactly what running every pattern on every text does.
    import judges.redact as redact

    shortcut = Redactor().text(text)
    original = redact.may_contain
    redact.may_contain = lambda *_: True
    try:
        every_pattern = Redactor().text(text)
    finally:
        redact.may_contain = original
    assert shortcut == every_pattern


def test_the_case_insensitive_skip_folds_every_letter_re_folds() -> None:
    """Every character that `re`'s IGNORECASE matches to a letter of a case-insensitive
    kind's literal becomes exactly that letter once folded (_RE_FOLDS, then lower): so the
    literal check can skip the regex on non-ASCII texts too without missing a match."""
    import re
    import sys

    from judges.redact_prefilter import _MUST_CONTAIN_ANY_CASE, _RE_FOLDS

    letters = "".join(sorted({c for ns in _MUST_CONTAIN_ANY_CASE.values() for n in ns for c in n}))
    any_letter = re.compile(f"[{re.escape(letters)}]", re.IGNORECASE)
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        if 0xD800 <= cp <= 0xDFFF or not any_letter.fullmatch(c):
            continue
        folded = c.translate(_RE_FOLDS).lower()
        assert re.fullmatch(re.escape(folded), c, re.IGNORECASE) and folded in letters, hex(cp)
