from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from judges.text import (
    content_words,
    extract_entities,
    extract_numbers,
    has_negation,
    parse_number,
    split_sentences,
    tokenize,
)


def test_split_keeps_abbreviations_and_decimals_together() -> None:
    text = "Dr. Smith paid $5.5 million in the U.S. last year. It rose 3.2%. See e.g. the report."
    assert split_sentences(text) == [
        "Dr. Smith paid $5.5 million in the U.S. last year.",
        "It rose 3.2%.",
        "See e.g. the report.",
    ]


def test_split_treats_list_items_as_units_and_drops_bullets() -> None:
    text = "Steps:\n1. Preheat the oven.\n2. Bake it.\n* Serve hot\n- Enjoy"
    expected = ["Steps:", "Preheat the oven.", "Bake it.", "Serve hot", "Enjoy"]
    assert split_sentences(text) == expected


def test_split_handles_question_and_exclamation_marks() -> None:
    assert split_sentences("Why? Because! Yes.") == ["Why?", "Because!", "Yes."]


def test_numbers_in_different_spellings_normalise_to_the_same_value() -> None:
    for text in ("$50,000", "50k", "50 000", "50000", "50 thousand", "$50K"):
        assert extract_numbers(text) == {"50000"}, text
    assert extract_numbers("5.5 million") == {"5500000"}
    assert extract_numbers("12.5%") == {"12.5"}
    assert extract_numbers("$5,000") != extract_numbers("$50,000")


def test_dates_agree_across_formats_and_keep_the_year() -> None:
    expected = {"3-5", "2020"}
    assert extract_numbers("March 5, 2020") == extract_numbers("5th of March 2020") == expected
    assert extract_numbers("in 1977") == {"1977"}


def test_number_words_count_as_numbers() -> None:
    assert extract_numbers("three cats") == {"3"}


def test_parse_number_rejects_garbage() -> None:
    assert parse_number("abc") is None


def test_entities_skip_sentence_initial_capitals() -> None:
    ents = extract_entities("The tower is tall. It was built by Gustave Eiffel in Paris.")
    assert ents == {"gustave eiffel", "paris"}


def test_negation_and_content_words() -> None:
    assert has_negation("It does not work") and has_negation("It doesn't work")
    assert not has_negation("It works")
    assert content_words("The cleaning of teeth") == ["clean", "teeth"]


@given(st.text())
def test_split_never_loses_alphanumeric_content(text: str) -> None:
    joined = "".join(split_sentences(text))
    words = [w for w in tokenize(text) if w.isalnum()]
    assert all(w in joined.lower() for w in words)


@given(st.integers(min_value=0, max_value=10**9))
def test_thousands_separators_do_not_change_the_value(n: int) -> None:
    assert extract_numbers(f"{n:,}") == extract_numbers(str(n)) == {str(n)}


@given(st.text())
def test_helpers_are_total(text: str) -> None:
    split_sentences(text)
    extract_numbers(text)
    extract_entities(text)
    content_words(text)
