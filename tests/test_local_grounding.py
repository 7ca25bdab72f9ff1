from __future__ import annotations

import pytest

from judges.scorers.local import (
    score_answer_relevance_local,
    score_faithfulness_local,
)
from judges.types import Context, EvalCase, Status

CONTEXT = (
    "The Acme Pro plan costs $50,000 per year and includes 24/7 support. "
    "It was launched in March 2021 by Jane Doe, the head of sales at Acme. "
    "The plan does not include on-site training."
)


def case(answer: str, contexts: tuple[Context, ...] | None = None, question: str = "") -> EvalCase:
    return EvalCase(
        trace_id="t1",
        span_id="s1",
        question=question or "How much does the Acme Pro plan cost?",
        answer=answer,
        contexts=(Context("doc1", CONTEXT),) if contexts is None else contexts,
    )


def test_verbatim_answer_is_grounded() -> None:
    score = score_faithfulness_local(case("The Acme Pro plan costs $50,000 per year."))
    assert score.status is Status.OK and score.method == "local"
    assert score.passed and score.label == "grounded"
    sent = score.details["sentences"][0]
    assert sent["best_context_id"] == "doc1" and sent["unsupported_numbers"] == []


def test_changed_number_is_flagged_and_scores_lower() -> None:
    good = score_faithfulness_local(case("The Acme Pro plan costs $50,000 per year."))
    bad = score_faithfulness_local(case("The Acme Pro plan costs $5,000 per year."))
    assert bad.details["sentences"][0]["unsupported_numbers"] == ["5000"]
    assert bad.value is not None and good.value is not None and bad.value < good.value
    # Another spelling of the same amount is not a hallucination.
    same = score_faithfulness_local(case("The Acme Pro plan costs 50k per year."))
    assert same.details["sentences"][0]["unsupported_numbers"] == []


def test_invented_content_is_hallucinated() -> None:
    answer = (
        "The Acme Pro plan costs $50,000 per year. "
        "Customers also receive a free Tesla Model 3 and unlimited massages in Zurich every Friday."
    )
    score = score_faithfulness_local(case(answer))
    assert score.passed is False and score.label == "hallucinated"
    invented = score.details["sentences"][1]
    assert {"tesla model", "zurich"} & set(invented["unsupported_entities"])
    assert invented["support"] < score.details["sentences"][0]["support"]


def test_attribution_and_lead_ins_are_not_claims_about_the_world() -> None:
    plain = score_faithfulness_local(case("The Acme Pro plan costs $50,000 per year."))
    cited = score_faithfulness_local(
        case("Based on the given passages, the Acme Pro plan costs $50,000 per year (Passage 1).")
    )
    assert cited.value == pytest.approx(plain.value)


def test_empty_contexts_are_skipped() -> None:
    for contexts in ((), (Context("d", "   "),)):
        score = score_faithfulness_local(case("Anything.", contexts=contexts))
        assert score.status is Status.SKIPPED and score.value is None


def test_answer_without_claims_scores_one_with_a_note() -> None:
    for answer in ("", "Yes.", "I cannot answer that based on the passages."):
        score = score_faithfulness_local(case(answer))
        assert score.status is Status.OK and score.value == 1.0
        assert score.details["note"] == "no factual claims"


def test_threshold_controls_passed() -> None:
    answer = "The plan costs $5,000 and was launched in 2019 by John Smith."
    value = score_faithfulness_local(case(answer)).value
    assert value is not None
    assert score_faithfulness_local(case(answer), threshold=value).passed is True
    assert score_faithfulness_local(case(answer), threshold=min(1.0, value + 1e-3)).passed is False


def test_relevance_rewards_on_topic_and_penalises_evasion() -> None:
    on_topic = score_answer_relevance_local(case("The Acme Pro plan costs $50,000 per year."))
    off_topic = score_answer_relevance_local(case("Bananas are rich in potassium."))
    evasive = score_answer_relevance_local(
        case("The passages do not provide the cost of the Acme Pro plan.")
    )
    assert on_topic.value is not None and off_topic.value is not None
    assert on_topic.value > off_topic.value and on_topic.passed
    assert evasive.details["evasive"] and evasive.value is not None and evasive.value <= 0.25
    assert score_answer_relevance_local(case("   ")).status is Status.SKIPPED


def test_embeddings_keep_verdicts_and_report_similarity() -> None:
    pytest.importorskip("sentence_transformers", reason="needs the optional extra [embeddings]")
    from judges.llm.embedder import Embedder

    emb = Embedder()
    good = score_faithfulness_local(case("The Acme Pro plan costs $50,000 per year."), emb)
    bad = score_faithfulness_local(case("The Acme Pro plan costs $5,000 per year."), emb)
    assert good.details["embeddings"] is True
    assert good.details["sentences"][0]["similarity"] > 0.7
    assert good.value is not None and bad.value is not None and bad.value < good.value
    rel = score_answer_relevance_local(case("The Acme Pro plan costs $50,000 per year."), emb)
    assert rel.passed and rel.details["similarity"] > 0.5
    vectors = emb.encode(["a", "b", "a"])
    assert vectors.shape == (3, 384)
    assert abs(float(vectors[0] @ vectors[0]) - 1.0) < 1e-4


# --- hard evidence, records, caps, version ------------------------------------------------


def shipped_local_threshold() -> float:
    from evaluator.config.rubrics import load_rubrics
    from evaluator.config.settings import SHIPPED_RUBRICS_DIR
    from judges.scorers.faithfulness import local_threshold

    rubric = load_rubrics(SHIPPED_RUBRICS_DIR).by_name("faithfulness")
    assert rubric is not None
    return local_threshold(rubric)


def test_readme_example_fails_the_shipped_rubric_locally() -> None:
    readme = case("It costs $5,000 per year.", (Context("doc-7", "Enterprise: $50,000 per year."),))
    score = score_faithfulness_local(readme, threshold=shipped_local_threshold())
    assert score.passed is False and score.details["hard_evidence"] is True
    sent = score.details["sentences"][0]
    assert sent["contradicted_values"] == ["$5,000"] and sent["unsupported_numbers"] == ["5000"]
    assert sent["hard_evidence"] is True and sent["support"] <= 0.1


def test_invented_price_and_gift_fail_the_shipped_rubric_locally() -> None:
    ctx = (Context("pricing", "Team plan: $49 per month, up to 10 seats, email support."),)
    answer = "The Team plan is $149 per month and comes with a free iPad for every seat."
    score = score_faithfulness_local(case(answer, ctx), threshold=shipped_local_threshold())
    assert score.passed is False and score.details["hard_evidence"] is True
    sent = score.details["sentences"][0]
    assert sent["contradicted_values"] == ["$149"] and sent["unsupported_entities"] == ["ipad"]


def test_restated_values_in_other_spellings_do_not_trip_the_rule() -> None:
    answer = "The Acme Pro plan costs $50k a year and launched on 2021-03-15 via Jane Doe."
    ctx = (Context("d", "The Acme Pro plan costs $50,000 per year. It launched on March 15, "
                        "2021. Jane Doe led the launch."),)  # fmt: skip
    score = score_faithfulness_local(case(answer, ctx))
    assert score.details["hard_evidence"] is False
    assert score.details["local_method_version"]


def test_json_record_context_is_matched_field_by_field() -> None:
    record = (
        '{"name": "Hotel Adria", "city": "Split", "starRating": 4, "has_pool": true, '
        '"rooms": [{"type": "double", "price_eur": 120}]}'
    )
    ctx = (Context("record", record),)
    good = score_faithfulness_local(case("Hotel Adria in Split has a star rating of 4.", ctx))
    bad = score_faithfulness_local(case("Hotel Adria in Split has a star rating of 5.", ctx))
    invented = score_faithfulness_local(case("Hotel Adria in Zagreb has a star rating of 4.", ctx))
    assert good.passed and good.details["hard_evidence"] is False
    assert bad.passed is False and bad.details["sentences"][0]["contradicted_values"] == ["5"]
    assert invented.passed is False and invented.details["sentences"][0][
        "unsupported_entities"
    ] == ["zagreb"]
    assert good.value is not None and bad.value is not None and good.value > bad.value


def test_record_units_flatten_fields_and_records() -> None:
    from judges.scorers.local_contexts import record_units

    units = record_units('[{"firstName": "Ada", "born": 1815}, {"firstName": "Alan"}]')
    assert units is not None and "first name: Ada" in units and "born: 1815" in units
    assert "first name: Ada; born: 1815" in units
    assert record_units("plain prose") is None and record_units("{broken") is None


def test_input_past_the_cap_is_an_error_with_cause_not_a_partial_score() -> None:
    from judges.scorers.local import MAX_ANSWER_CHARS

    huge = "The Acme Pro plan costs $50,000 per year. " * (MAX_ANSWER_CHARS // 40 + 1)
    score = score_faithfulness_local(case(huge))
    assert score.status is Status.ERROR and score.value is None
    assert score.details["cause"] == "input_too_large" and "cap" in score.explanation


def test_time_is_linear_in_the_answer_size() -> None:
    import gc
    import time

    def seconds(n: int) -> float:
        answer = " ".join(f"Jane Doe sold {i} widgets to Acme in March 2021." for i in range(n))
        best = float("inf")
        for _ in range(3):  # the fastest of three: a shared machine's pauses only add time
            start = time.process_time()
            score_faithfulness_local(case(answer, (Context("d", CONTEXT * 20),)))
            best = min(best, time.process_time() - start)
        return best

    # With the collector off: in a full suite's heap its passes, not the scorer, dominated
    # (one run measured 0.79 s for what takes 0.09 s alone).
    gc.collect()
    gc.disable()
    try:
        small, large = seconds(40), seconds(320)
    finally:
        gc.enable()
    assert large < small * 8 * 3  # 8x the input: well under the 64x of a quadratic pass
