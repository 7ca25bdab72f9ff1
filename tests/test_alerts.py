"""The regression job end to end: eval records in real SQLite / PostgreSQL, alerts out
(stored, deduplicated, cooled down, resolved), delivered to a respx-mocked webhook; the
cron body's once-per-period claim against the real Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import respx

from evaluator.analytics.alerts import alert_to_json, list_alerts, policy_for
from evaluator.analytics.check_job import decide, regression_check_job, run_check
from evaluator.cli.main import main
from evaluator.config.policy import parse_policy
from evaluator.config.rubrics import RubricSet, parse_rubric
from evaluator.config.settings import AlertsSettings
from evaluator.errors import RubricError
from evaluator.outputs.webhooks import build_sinks
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from evaluator.worker.runtime import build_runtime
from tests.conftest import REDIS_URL, make_settings, write_rubric

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
RUBRIC = """
name = "faith"
version = "1"
scorer = "faithfulness"
pass_threshold = 0.5
"""
LABELS = {"prompt_version": "v17", "model": "gpt-4o", "feature": "qa"}


def rubrics(tmp_path: Path, body: str = RUBRIC) -> RubricSet:
    return RubricSet((parse_rubric(body, source=tmp_path / "faith.toml"),), tmp_path)


def pattern(n: int, bad_every: int) -> list[float]:
    """Deterministic pass/fail stream: one 0 in every `bad_every` scores."""
    return [0.0 if i % bad_every == bad_every - 1 else 1.0 for i in range(n)]


def seed(store: Store, scores: list[float], start: datetime, end: datetime, *,
         prefix: str, epoch: str = "legacy", **labels: str) -> None:  # fmt: skip
    step = (end - start) / len(scores)
    rows = [
        EvalRecord(trace_id=f"{prefix}-{i}", rubric="faith", rubric_version="1",
                   scorer="faithfulness", status="ok", score=s, passed=s >= 0.5,
                   created_at=start + step * i, epoch=epoch, **{**LABELS, **labels})
        for i, s in enumerate(scores)
    ]  # fmt: skip
    from sqlmodel import Session

    with Session(store.engine) as session:
        session.add_all(rows)
        session.commit()


def stable_baseline(store: Store, **labels: str) -> None:
    seed(store, pattern(700, 20), NOW - timedelta(days=7, hours=6), NOW - timedelta(hours=6),
         prefix="base", **labels)  # fmt: skip


ALERTS = AlertsSettings()


def test_a_drop_opens_one_alert_with_numbers_and_worst_traces_then_resolves(
    store: Store, tmp_path: Path
) -> None:
    stable_baseline(store)
    seed(store, pattern(60, 2), NOW - timedelta(hours=5), NOW, prefix="bad")
    report, events = decide(store, rubrics(tmp_path), ALERTS, NOW)
    assert len(report.opened) == 1 and [e for e, _ in events] == ["alert.opened"]
    (alert,) = list_alerts(store, open_only=True)
    assert (alert.kind, alert.rubric, alert.labels) == (
        "drop",
        "faith",
        {**LABELS, "epoch": "legacy"},
    )
    assert alert.test == "e-detector" and alert.p_value < 1e-4
    assert alert.baseline_n == 700 and alert.baseline_mean == pytest.approx(0.95)
    assert alert.summary["current"]["mean_ci_high"] < alert.summary["baseline"]["mean_ci_low"]
    assert alert.summary["window_test"]["test"] == "fisher-exact"
    assert len(alert.worst_traces) == 5 and all(t["score"] == 0.0 for t in alert.worst_traces)
    assert all(t["trace_id"].startswith("bad-") for t in alert.worst_traces)
    assert "faith [prompt_version=v17 model=gpt-4o feature=qa epoch=legacy]" in alert.message
    assert alert.changed["text"] == "no version change inside the group"

    # Still bad an hour later: deduplicated, nothing new to deliver.
    report, events = decide(store, rubrics(tmp_path), ALERTS, NOW + timedelta(minutes=5))
    assert (len(report.opened), events) == (0, [])
    assert len(list_alerts(store)) == 1

    # Recovery: the last 6 h score like the baseline again.
    later = NOW + timedelta(hours=7)
    seed(store, pattern(80, 20), later - timedelta(hours=5), later, prefix="good")
    report, events = decide(store, rubrics(tmp_path), ALERTS, later)
    assert [e for e, _ in events] == ["alert.resolved"]
    (alert,) = list_alerts(store)
    assert alert.status == "resolved" and alert.resolution.startswith("recovered")


def test_noise_does_not_alert_and_too_few_samples_do_not_either(
    store: Store, tmp_path: Path
) -> None:
    stable_baseline(store)
    seed(store, pattern(60, 16), NOW - timedelta(hours=5), NOW, prefix="noise")
    seed(store, [0.0] * 5, NOW - timedelta(hours=1), NOW, prefix="few", feature="other")
    seed(store, pattern(300, 20), NOW - timedelta(days=3), NOW - timedelta(hours=6),
         prefix="fb", feature="other")  # fmt: skip
    report, _ = decide(store, rubrics(tmp_path), ALERTS, NOW)
    assert report.opened == [] and report.groups == 2


def test_cool_down_suppresses_a_second_alert_after_resolution(store: Store, tmp_path: Path) -> None:
    stable_baseline(store)
    seed(store, pattern(60, 2), NOW - timedelta(hours=5), NOW, prefix="bad")
    decide(store, rubrics(tmp_path), ALERTS, NOW)
    (alert,) = list_alerts(store)
    alert.status, alert.resolved_at = "resolved", NOW
    from evaluator.analytics.alerts import save

    save(store, alert)
    report, _ = decide(store, rubrics(tmp_path), ALERTS, NOW + timedelta(minutes=10))
    assert report.opened == [] and report.suppressed == 1
    short = AlertsSettings(cool_down_minutes=5)
    report, _ = decide(store, rubrics(tmp_path), short, NOW + timedelta(minutes=10))
    assert len(report.opened) == 1


def test_new_prompt_version_is_compared_with_the_one_it_replaced(
    store: Store, tmp_path: Path
) -> None:
    stable_baseline(store)  # v17 until 6 h ago
    seed(store, pattern(30, 2), NOW - timedelta(hours=2), NOW, prefix="v18", prompt_version="v18")
    report, _ = decide(store, rubrics(tmp_path), ALERTS, NOW)
    (alert,) = report.opened
    assert alert.kind == "version" and alert.labels["prompt_version"] == "v18"
    # Baseline: v17's scores in the 7 days before v18's first score; the alarm comes a few
    # scores after min_samples (the e-process needs 2/alpha: its reference costs alpha/2).
    assert alert.test == "e-process" and 650 < alert.baseline_n < 700 and alert.current_n == 14
    assert alert.changed["labels"] == {"prompt_version": {"from": ["v17"], "to": ["v18"]}}
    assert "prompt_version v17 -> v18" in alert.message
    assert all(t["trace_id"].startswith("v18-") for t in alert.worst_traces)
    # Both counts, plainly: 30 scores stored, the e-process decided after 10.
    assert "30 scores in the window, the test decided after the first 14" in alert.message
    assert alert_to_json(alert)["export_command"].endswith(f"--alert {alert.id}")
    assert alert_to_json(alert)["alert_class"] == "page"  # a judge's verdict pages


def test_a_good_new_version_does_not_alert(store: Store, tmp_path: Path) -> None:
    stable_baseline(store)
    seed(store, pattern(200, 25), NOW - timedelta(hours=5), NOW, prefix="v18", prompt_version="v18")
    report, _ = decide(store, rubrics(tmp_path), ALERTS, NOW)
    assert report.opened == []


def test_an_evaluator_epoch_change_is_a_new_series_not_a_drop(store: Store, tmp_path: Path) -> None:
    """Same app, same labels; only the evaluator changed (a stricter judge scores lower).
    Neither kind of check may page: the new epoch has no baseline of its own yet."""
    stable_baseline(store)  # epoch "legacy", until 6 h ago
    seed(store, pattern(120, 2), NOW - timedelta(hours=5), NOW, prefix="strict", epoch="e2")
    report, events = decide(store, rubrics(tmp_path), ALERTS, NOW)
    assert (report.opened, events) == ([], [])
    assert report.groups == 1  # only the new epoch scored in the window

    # A day later the new epoch has its own baseline; a real drop inside it still pages.
    later = NOW + timedelta(days=1)
    seed(store, pattern(400, 2), NOW, later - timedelta(hours=6), prefix="e2-base", epoch="e2")
    seed(store, [0.0] * 60, later - timedelta(hours=5), later, prefix="e2-bad", epoch="e2")
    report, _ = decide(store, rubrics(tmp_path), ALERTS, later)
    (alert,) = report.opened
    assert (alert.kind, alert.labels["epoch"]) == ("drop", "e2")
    assert alert.baseline_mean == pytest.approx(0.5, abs=0.01)  # e2's own, not legacy's 0.95


def test_a_new_prompt_version_in_a_new_epoch_is_not_compared_across_evaluators(
    store: Store, tmp_path: Path
) -> None:
    stable_baseline(store)
    seed(store, pattern(30, 2), NOW - timedelta(hours=2), NOW, prefix="v18",
         prompt_version="v18", epoch="e2")  # fmt: skip
    report, _ = decide(store, rubrics(tmp_path), ALERTS, NOW)
    assert report.opened == []


def test_rubric_regression_table_overrides_defaults_and_bad_keys_are_named(tmp_path: Path) -> None:
    body = RUBRIC + '[regression]\nwindow = "1h"\nmin_samples = 30\ngroup_by = ["feature"]\n'
    cfg = policy_for(rubrics(tmp_path, body).rubrics[0], ALERTS)
    assert (cfg.policy.window, cfg.policy.min_samples, cfg.group_by) == (
        timedelta(hours=1), 30, ("feature",))  # fmt: skip
    with pytest.raises(ValueError, match="unknown key 'windows'"):
        parse_policy({"windows": "1h"})
    with pytest.raises(ValueError, match="not a duration"):
        parse_policy({"baseline": "a week"})
    # Refused when the file is loaded (rubrics check, worker start-up) ...
    with pytest.raises(RubricError, match="key 'regression': alpha and confidence"):
        rubrics(tmp_path, RUBRIC + "[regression]\nalpha = 3\n")
    # ... and by the check itself for a rubric built in code.
    good = rubrics(tmp_path).rubrics[0]
    bad = RubricSet((good.model_copy(update={"regression": {"alpha": 3}}),), tmp_path)
    report, _ = decide(Store(f"sqlite:///{tmp_path / 'x.db'}"), bad, ALERTS, NOW)
    assert "rubric 'faith': key 'regression'" in report.errors[0]


async def test_opened_alert_goes_to_the_webhook_and_the_delivery_is_recorded(
    store: Store, tmp_path: Path
) -> None:
    stable_baseline(store)
    seed(store, pattern(60, 2), NOW - timedelta(hours=5), NOW, prefix="bad")
    settings = AlertsSettings(webhook_urls=("https://hooks.example.com/a",),
                              allowlist=("hooks.example.com",), backoff_s=0)  # fmt: skip

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    with respx.mock:
        route = respx.post("https://93.184.216.34/a").mock(return_value=httpx.Response(200))
        sinks = build_sinks(settings, {"EVALUATOR_WEBHOOK_SECRET": "k"}, resolver=resolve)
        report = await run_check(store, rubrics(tmp_path), settings, sinks, NOW)
        await sinks.aclose()
    assert len(report.opened) == 1 and route.call_count == 1
    body = json.loads(route.calls[0].request.content)
    assert body["event"] == "alert.opened" and len(body["alert"]["worst_traces"]) == 5
    (alert,) = list_alerts(store)
    assert [d["sink"] for d in alert.deliveries] == ["log", "webhook"]
    assert all(d["ok"] for d in alert.deliveries)


async def test_cron_body_runs_once_per_period_across_workers(
    tmp_path: Path, redis_url: str
) -> None:
    from redis.asyncio import Redis

    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    settings = make_settings(tmp_path, redis_url)
    runtime = build_runtime(settings)
    stable_baseline(runtime.store)
    redis = Redis.from_url(redis_url)
    try:
        first = await regression_check_job({"runtime": runtime, "redis": redis})
        second = await regression_check_job({"runtime": runtime, "redis": redis})
    finally:
        await redis.aclose()
        await runtime.aclose()
    assert first["errors"] == [] and first["opened"] == 0
    assert second == {"skipped": "already run for this period"}


def test_worker_registers_a_unique_cron_job(tmp_path: Path) -> None:
    from evaluator.worker.app import cron_name, worker_options

    settings = make_settings(tmp_path, REDIS_URL, alerts={"interval_minutes": 15})
    jobs = {j.name: j for j in worker_options(settings)["cron_jobs"]}
    # Retention is off by default; every other cron job is registered once, unique.
    names = {
        cron_name(settings, n)
        for n in ("sweep", "batches", "anchors", "certification", "regression_check")
    }
    assert set(jobs) == names and all(j.unique for j in jobs.values())
    assert jobs[cron_name(settings, "regression_check")].minute == {0, 15, 30, 45}


def test_alerts_command_lists_open_alerts_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, REDIS_URL)
    store = Store(settings.database.url)
    stable_baseline(store)
    seed(store, pattern(60, 2), NOW - timedelta(hours=5), NOW, prefix="bad")
    decide(store, rubrics(tmp_path), ALERTS, NOW)
    store.close()
    assert main(["--settings", str(tmp_path / "settings.toml"), "alerts", "--open", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (alert,) = doc["alerts"]
    assert alert["status"] == "open" and alert["kind"] == "drop" and alert["p_value"] < 0.01
    assert main(["--settings", str(tmp_path / "settings.toml"), "alerts"]) == 0
    assert "faith [prompt_version=v17" in capsys.readouterr().out


def test_a_local_only_rubric_raises_an_advisory_alert(store: Store, tmp_path: Path) -> None:
    """A local score follows writing style too: its alerts say so and are a weaker class."""
    stable_baseline(store)
    seed(store, pattern(30, 2), NOW - timedelta(hours=2), NOW, prefix="v18", prompt_version="v18")
    local = RUBRIC + 'method = "local"\n'
    report, _ = decide(store, rubrics(tmp_path, local), ALERTS, NOW)
    (alert,) = report.opened
    assert alert.message.startswith("advisory: a local (no-judge) score moved")
    assert alert_to_json(alert)["alert_class"] == "advisory"


async def test_opened_alert_is_exported_to_otel_with_its_intervals(
    store: Store, tmp_path: Path
) -> None:
    """The alert event parses with opentelemetry-proto and carries each mean's interval and
    level; the same interval and level are in the alert's JSON (`alerts --json`, webhooks)."""
    from evaluator.outputs.otel import ALERT_EVENT_NAME, EvaluationExporter, decode_events
    from tests.test_otel_export import LogsReceiver

    stable_baseline(store)
    seed(store, pattern(60, 2), NOW - timedelta(hours=5), NOW, prefix="bad")
    receiver = LogsReceiver()
    exporter = EvaluationExporter(receiver.endpoint)
    try:
        sinks = build_sinks(AlertsSettings(), {})
        report = await run_check(store, rubrics(tmp_path), ALERTS, sinks, NOW, otel=exporter)
        await sinks.aclose()
    finally:
        await exporter.aclose()
        receiver.close()
    assert len(report.opened) == 1 and receiver.requests == 1
    (event,) = decode_events(receiver.bodies[0], ALERT_EVENT_NAME)
    a = event["attributes"]
    (alert,) = list_alerts(store)
    assert a["evaluator.alert.id"] == str(alert.id) and a["gen_ai.evaluation.name"] == "faith"
    assert a["evaluator.alert.event"] == "alert.opened" and event["severity_number"] == 13
    for side in ("evaluator.score", "evaluator.baseline"):
        assert a[f"{side}.ci.lower"] <= a[f"{side}.mean"] <= a[f"{side}.ci.upper"]
        assert a[f"{side}.ci.level"] == 0.95  # the policy's default confidence
    assert a["evaluator.score.mean"] == pytest.approx(alert.current_mean)
    assert a["evaluator.score.ci.upper"] < a["evaluator.baseline.ci.lower"]  # a real drop
    assert a["evaluator.label.prompt_version"] == "v17"
    current = alert_to_json(alert)["summary"]["current"]
    assert current["ci_level"] == a["evaluator.score.ci.level"]
    assert current["mean_ci_low"] == pytest.approx(a["evaluator.score.ci.lower"])
