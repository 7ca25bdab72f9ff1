"""Quality x cost: judge + generator USD per answer that passed all of its rubrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from evaluator.analytics.cost import cost_per_pass
from evaluator.cli.main import main
from evaluator.sources.ingest import ingest_traces
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from tests.conftest import make_settings


def _trace(tid: str, version: str, tenant: str, *, own_cost: float | None = None) -> dict:
    attrs: dict[str, object] = {"prompt.version": version, "tenant": tenant}
    if own_cost is not None:
        attrs["cost_usd"] = own_cost
    return {"trace_id": tid, "attributes": attrs, "spans": [
        {"span_id": "c", "name": "chat", "attributes": {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100,
            "gen_ai.output.messages": [{"role": "assistant", "content": "A."}]}}]}  # fmt: skip


def _record(tid: str, rubric: str, version: str, tenant: str, passed: bool | None) -> EvalRecord:
    return EvalRecord(
        trace_id=tid, span_id="c", rubric=rubric, rubric_version="1", scorer="faithfulness",
        method="judge", status="ok" if passed is not None else "error",
        score=None if passed is None else float(passed), passed=passed,
        judge_cost_usd=0.001, prompt_version=version, tenant=tenant,
        created_at=datetime.now(UTC) - timedelta(hours=1),
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path, redis_url: str) -> Store:
    settings = make_settings(tmp_path, redis_url)
    s = Store(settings.database.url)
    ingest_traces(s, [_trace("a", "v1", "acme"), _trace("b", "v1", "acme"),
                      _trace("c", "v2", "zeta", own_cost=0.5), _trace("d", "v2", "zeta")])  # fmt: skip
    with Session(s.engine) as session:
        session.add_all([
            _record("a", "faith", "v1", "acme", True), _record("a", "rel", "v1", "acme", True),
            _record("b", "faith", "v1", "acme", True), _record("b", "rel", "v1", "acme", False),
            _record("c", "faith", "v2", "zeta", True),
            _record("d", "faith", "v2", "zeta", None),  # an error: unscored, still paid for
        ])  # fmt: skip
        session.commit()
    return s


def test_cost_per_pass_counts_every_cost_and_only_full_passes(store: Store) -> None:
    price = 2.5 * 1000 / 1e6 + 10.0 * 100 / 1e6  # gpt-4o list price of one answer's tokens

    def list_price(model: str | None, tokens_in: int, tokens_out: int) -> float:
        return price if model == "gpt-4o" and (tokens_in, tokens_out) == (1000, 100) else 0.0

    now = datetime.now(UTC)
    doc = cost_per_pass(store, list_price, now - timedelta(days=1), now, "prompt_version")
    v1, v2 = doc["groups"]
    assert (v1["key"], v1["answers"], v1["passes"]) == ("v1", 2, 1)  # b failed one rubric
    assert v1["judge_usd"] == pytest.approx(0.004)
    assert v1["generator_usd"] == pytest.approx(2 * price)
    assert v1["cost_per_pass_usd"] == pytest.approx(0.004 + 2 * price)
    assert (v2["answers"], v2["passes"], v2["unscored"]) == (2, 1, 1)
    assert v2["generator_usd"] == pytest.approx(0.5 + price)  # the app's own cost_usd wins
    assert v2["pass_rate"] == 1.0


def test_trends_metric_cost_per_pass_by_tenant(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store.close()
    code = main(["--settings", str(tmp_path / "settings.toml"), "trends",
                 "--metric", "cost_per_pass", "--by", "tenant", "--since", "1d", "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(g["key"], g["passes"]) for g in doc["groups"]] == [("acme", 1), ("zeta", 1)]
    assert doc["groups"][0]["generator_usd"] == pytest.approx(2 * (0.0025 + 0.001))


def test_an_unpriced_model_is_unknown_never_zero(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A judge model without a [pricing] entry made calls: its group's judge cost and cost
    per pass are unknown (null, "unknown"), on the command line, the API and the overview."""
    from evaluator.analytics.overview import overview
    from evaluator.web.api import Api

    local = _record("c", "local", "v2", "zeta", True)
    local.judge_model, local.judge_calls, local.judge_cost_usd = "llama-local", 2, 0.0
    # A self-consistency record: 3 generator re-samples (priced) + 1 judge call (gpt-4o).
    mixed = _record("a", "consistency", "v1", "acme", True)
    mixed.judge_model, mixed.judge_calls, mixed.judge_cost_usd = "gpt-4o", 4, 0.007
    mixed.details = {"generator_calls": 3, "generator_cost_usd": 0.002}
    mixed.model = "gpt-4o"
    with Session(store.engine) as session:
        session.add_all([local, mixed])
        session.commit()
    now = datetime.now(UTC)
    pricing = {"gpt-4o"}
    doc = cost_per_pass(
        store, lambda *_: 0.0035, now - timedelta(days=1), now, "prompt_version", pricing=pricing
    )
    v1, v2 = doc["groups"]
    assert v1["judge_usd"] == pytest.approx(0.004 + 0.007) and v1["unpriced_models"] == []
    assert (v2["judge_usd"], v2["cost_per_pass_usd"], v2["usd_per_day"]) == (None, None, None)
    assert v2["unpriced_models"] == ["llama-local"]
    api = Api(store, lambda *_: 0.0035, pricing=pricing)
    assert api.cost({"since": ["1d"]})["groups"][1]["judge_usd"] is None
    rows = {r["rubric"]: r for r in overview(store, pricing=pricing)["rubrics"]}
    assert rows["local"]["judge_cost_usd_per_day"] is None
    assert rows["local"]["unpriced_models"] == ["llama-local"]
    assert rows["consistency"]["judge_cost_usd_per_day"] is not None
    store.close()
    cfg = tmp_path / "settings.toml"
    assert (
        main(["--settings", str(cfg), "trends", "--metric", "cost_per_pass", "--since", "1d"]) == 0
    )
    out = capsys.readouterr().out
    v2_line = next(line for line in out.splitlines() if line.startswith("v2"))
    assert "unknown" in v2_line and "$0.0000" not in v2_line
    assert "no [pricing] entry for llama-local" in out


def test_split_record_tells_the_generator_from_the_judge() -> None:
    from evaluator.analytics.cost import split_record

    spend = split_record(4, 0.007, {"generator_calls": 3, "generator_cost_usd": 0.002})
    assert (spend.judge_calls, spend.generator_calls) == (1, 3)
    assert (spend.judge_usd, spend.generator_usd) == (pytest.approx(0.005), 0.002)
    assert split_record(2, 0.001, None).judge_calls == 2
