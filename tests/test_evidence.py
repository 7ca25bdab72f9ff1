"""Hard-evidence values: normalisation (unit + property tests) and the support check."""

from __future__ import annotations

import doctest

from hypothesis import given
from hypothesis import strategies as st

from judges import evidence
from judges.evidence import check_values, context_index, extract_values


def keys(text: str) -> list[str]:
    return [v.key for v in extract_values(text) if v.kind != "entity"]


def verdict(claim: str, context: str, question: str = "") -> tuple[list[str], list[str]]:
    values, words, initials = context_index(context)
    q_values, q_words, q_initials = context_index(question)
    return check_values(extract_values(claim), values + q_values, words | q_words,
                        initials | q_initials)  # fmt: skip


def test_doctests() -> None:
    assert doctest.testmod(evidence).failed == 0


def test_amounts_normalise_across_spellings() -> None:
    for text in ("$50,000", "$50k", "$50K", "50,000 dollars", "$50 thousand", "50000 USD"):
        assert keys(text) == ["money:usd:50000"], text
    assert keys("5 million") == keys("5,000,000") == ["number:5000000"]
    assert keys("€5.5 million") == ["money:eur:5500000"]


def test_dates_normalise_across_formats() -> None:
    forms = ("March 3, 2021", "3 March 2021", "2021-03-03", "3rd of March, 2021", "Mar. 3 2021")
    assert {tuple(keys(f)) for f in forms} == {("date:2021-3-3",)}
    assert keys("in March 2021") == ["date:2021-3-?"]


def test_percentages_and_number_words() -> None:
    assert keys("12%") == keys("12 percent") == keys("12 per cent") == ["percent:12"]
    assert keys("three seats") == ["number:3"] and keys("twenty-five") == ["number:25"]
    # "the two" and "one of them" are not count claims.
    assert keys("the two plans") == [] and keys("one of the plans") == []


def test_readme_example_is_contradicted() -> None:
    assert verdict("It costs $5,000 per year.", "Enterprise: $50,000 per year.") == (
        [],
        ["$5,000"],
    )
    assert verdict("It costs $50k per year.", "Enterprise: $50,000 per year.") == ([], [])


def test_invented_price_and_product_are_unsupported() -> None:
    missing, contradicted = verdict(
        "It costs $149 per month and includes a free iPad.", "Team: $49 per month for 10 seats."
    )
    assert contradicted == ["$149"] and missing == ["ipad"]


def test_rounding_to_the_written_precision_is_support() -> None:
    assert verdict("Revenue was $5.5 million.", "Revenue: $5,470,000.") == ([], [])
    assert verdict("Revenue was $5.6 million.", "Revenue: $5,470,000.")[1] == ["$5.6 million"]


def test_dates_match_when_the_claim_is_less_specific_or_the_year_is_elsewhere() -> None:
    assert verdict("It launched on 3 March 2021.", "Launched March 3, 2021.") == ([], [])
    assert verdict("It launched in March 2021.", "Launched 2021-03-03.") == ([], [])
    assert verdict("It launched on March 4, 2021.", "Launched March 3, 2021.")[1] == [
        "March 4, 2021"
    ]
    found = verdict("In 1977 Apple was incorporated.", "Apple: incorporated January 3, 1977.")
    assert found == ([], [])


def test_units_conversions_and_pointers() -> None:
    assert verdict("It is 58 °F (14 °C).", "Average: 58 degrees.") == ([], [])
    assert verdict("Passage 2 says it costs $49.", "It costs $49.") == ([], [])
    assert verdict("Where does it go on 1040?", "Form 1099.", question="on 1040?") == ([], [])


def test_names_supported_by_words_acronyms_or_question() -> None:
    ctx = "The BLS reports wages. Jane Doe leads Acme Corp in the U.S."
    assert verdict("The Bureau of Labor Statistics says so.", ctx) == ([], [])
    assert verdict("Doe runs it in the US, says Jane Doe.", ctx) == ([], [])
    assert verdict("It was founded by Elon Musk.", ctx) == (["elon musk"], [])
    assert verdict("Side Effects: none at Acme Corp.", ctx) == ([], [])


amounts = st.integers(min_value=1, max_value=10**9)


@given(amounts)
def test_money_spellings_agree(n: int) -> None:
    assert keys(f"${n:,}") == keys(f"{n} dollars") == [f"money:usd:{n}"]


@given(amounts)
def test_a_different_amount_is_never_supported(n: int) -> None:
    assert verdict(f"It costs ${n * 10:,}.", f"It costs ${n:,}.")[1] == [f"${n * 10:,}"]


@given(st.dates(min_value=__import__("datetime").date(1900, 1, 1)))
def test_date_formats_agree(d: object) -> None:
    iso = d.isoformat()  # type: ignore[attr-defined]
    long = d.strftime("%B %-d, %Y")  # type: ignore[attr-defined]
    euro = d.strftime("%-d %B %Y")  # type: ignore[attr-defined]
    assert keys(iso) == keys(long) == keys(euro)
    assert verdict(f"on {long}", f"on {iso}") == ([], [])


@given(st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda x: round(x, 1)))
def test_percent_spellings_agree(x: float) -> None:
    assert keys(f"{x}%") == keys(f"{x} percent")


@given(st.text(max_size=300))
def test_extraction_and_check_are_total(text: str) -> None:
    values = extract_values(text)
    check_values(values, extract_values(text, liberal=True))
