"""`evaluator calibrate`: score labelled data with a rubric and report agreement.

Reads labelled JSONL (docs/labelled-jsonl.md, via evaluator.sources.labelled): labelled
traces, RAGTruth-style records (QA, summary and data-to-text sources) or traces carrying the
boolean `ragtruth.hallucinated`. Positive class = the human says the answer fails the rubric.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator.errors import InputError
from evaluator.sources.labelled import read_labelled
from evaluator.traces.cases import build_case
from evaluator.worker.runtime import Runtime
from judges.agreement import auroc, balanced_accuracy, cohen_kappa, confusion, f1
from judges.hygiene import hygiene_warnings, spearman
from judges.redact import redact_case
from judges.rubric import Rubric
from judges.scorers.registry import run_scorer
from judges.types import EvalCase, Score, Status


@dataclass
class LabelledCase:
    case: EvalCase
    positive: bool  # hallucinated


@dataclass
class CalibrationReport:
    rubric: str
    n: int
    scored: int
    statuses: Counter[str] = field(default_factory=Counter)
    metrics: dict[str, Any] = field(default_factory=dict)
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # judge hygiene (judges/hygiene.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "rubric": self.rubric,
            "n": self.n,
            "scored": self.scored,
            "statuses": dict(self.statuses),
            "metrics": self.metrics,
            "per_model": self.per_model,
            "warnings": self.warnings,
        }


def load_labelled(path: Path, limit: int | None = None) -> list[LabelledCase]:
    """Labelled cases of a labelled JSONL file; a bad line raises InputError naming it."""
    out: list[LabelledCase] = []
    for item in read_labelled(path, limit):
        if item.passed is None:
            raise InputError(f"{path}: trace {item.trace.trace_id} has a human_score but no label")
        try:
            case = build_case(item.trace)
        except ValueError as exc:
            raise InputError(f"{path}: trace {item.trace.trace_id}: {exc}") from None
        out.append(LabelledCase(case=case, positive=not item.passed))
    return out


def agreement(labels: list[bool], scores: list[Score], threshold: float) -> dict[str, Any]:
    """Metrics over the cases that were scored; the score is 'goodness', so risk = 1 - score."""
    ok = [(y, s) for y, s in zip(labels, scores, strict=True) if s.status is Status.OK]
    if not ok:
        return {"error": "no case was scored"}
    y = [p[0] for p in ok]
    risk = [1.0 - float(s.value) for _, s in ok]  # type: ignore[arg-type]
    # The scorer's own verdict (a local score passes at local_threshold, not at the rubric's
    # pass_threshold); the threshold only for a score that carries no verdict.
    predicted = [
        (not s.passed) if s.passed is not None else float(s.value) < threshold  # type: ignore[arg-type]
        for _, s in ok
    ]
    cm = confusion(y, predicted)
    out: dict[str, Any] = {
        "decision": "the scorer's pass/fail (Score.passed)",
        "threshold": threshold,
        "positives": sum(y),
        "balanced_accuracy": balanced_accuracy(y, predicted),
        "f1": f1(y, predicted),
        "cohen_kappa": cohen_kappa(y, predicted),
        "confusion": {"tp": cm.tp, "fp": cm.fp, "tn": cm.tn, "fn": cm.fn},
    }
    try:
        out["auroc"] = auroc(y, risk)
    except ValueError:
        out["auroc"] = None  # one class only: undefined, not 0.5
    return out


async def calibrate(
    runtime: Runtime, rubric: Rubric, cases: list[LabelledCase], concurrency: int = 16
) -> CalibrationReport:
    limit = asyncio.Semaphore(concurrency)

    async def one(item: LabelledCase) -> Score:
        case = item.case
        if runtime.settings.redaction.enabled:
            case = redact_case(case, runtime.settings.redaction.kinds)
        async with limit:
            return await run_scorer(case, rubric, runtime.clients)

    scores = await asyncio.gather(*(one(c) for c in cases))
    labels = [c.positive for c in cases]
    report = CalibrationReport(
        rubric=rubric.name, n=len(cases), scored=sum(s.status is Status.OK for s in scores)
    )
    report.statuses.update(s.status.value for s in scores)
    report.metrics = agreement(labels, list(scores), rubric.pass_threshold)
    ok = [(c.case, s) for c, s in zip(cases, scores, strict=True) if s.value is not None]
    judge = runtime.clients.judge
    judge_model = rubric.judge.model or (judge.model if judge is not None else None)
    lengths = [len(case.answer) for case, _ in ok]
    values = [float(s.value) for _, s in ok if s.value is not None]
    report.metrics["length_spearman"] = spearman(lengths, values)
    report.warnings = hygiene_warnings(
        judge_model if rubric.needs_judge or rubric.resolved_method == "cascade" else None,
        [c.case.model for c in cases if c.case.model], lengths, values,
    )  # fmt: skip
    models = sorted({c.case.model or "?" for c in cases})
    for model in models:
        idx = [i for i, c in enumerate(cases) if (c.case.model or "?") == model]
        report.per_model[model] = {
            "n": len(idx),
            **agreement([labels[i] for i in idx], [scores[i] for i in idx], rubric.pass_threshold),
        }
    return report


def render(report: CalibrationReport) -> str:
    m = report.metrics
    lines = [
        f"rubric {report.rubric}: {report.scored}/{report.n} scored "
        f"({', '.join(f'{k}={v}' for k, v in sorted(report.statuses.items()))})"
    ]
    if "error" in m:
        return "\n".join([*lines, m["error"]])
    cm = m["confusion"]
    auc = "n/a" if m["auroc"] is None else f"{m['auroc']:.3f}"
    lines += [
        "positive class: hallucinated (the scorer's own fail verdict; pass_threshold "
        f"{m['threshold']} only for scores without one)",
        f"AUROC {auc}  balanced accuracy {m['balanced_accuracy']:.3f}  F1 {m['f1']:.3f}  "
        f"Cohen's kappa {m['cohen_kappa']:.3f}",
        "confusion:            predicted hallucinated   predicted ok",
        f"  hallucinated        {cm['tp']:>22} {cm['fn']:>14}",
        f"  ok                  {cm['fp']:>22} {cm['tn']:>14}",
        "",
        f"  {'model':<24} {'n':>4} {'pos':>4} {'AUROC':>6} {'BalAcc':>6} {'F1':>6}",
    ]
    for model, pm in report.per_model.items():
        if "error" in pm:
            lines.append(f"  {model:<24} {pm['n']:>4}  {pm['error']}")
            continue
        pauc = "  n/a" if pm["auroc"] is None else f"{pm['auroc']:.3f}"
        lines.append(
            f"  {model:<24} {pm['n']:>4} {pm['positives']:>4} {pauc:>6} "
            f"{pm['balanced_accuracy']:>6.3f} {pm['f1']:>6.3f}"
        )
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)
