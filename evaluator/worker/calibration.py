"""`evaluator calibrate`: score labelled data with a rubric and report agreement.

Reads labelled JSONL (docs/labelled-jsonl.md, via evaluator.sources.labelled): labelled
traces, RAGTruth-style records (QA, summary and data-to-text sources) or traces carrying the
boolean `ragtruth.hallucinated`. Positive class = the human says the answer fails the rubric.

A bad judge is reported as bad, not as a number: the report leads with the share of cases
that ended in errors (by `error_kind`); agreement metrics are refused below `min_scored`
scored cases or `MIN_PER_CLASS` of either class among them (the report says how many more it
needs) — an AUROC of 0.0 from 3 cases says nothing; constant or near-constant scores are
warned about (a judge that gives one verdict whatever the answer is not judging).
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
from judges.agreement import auroc, balanced_accuracy, cohen_kappa, confusion, f1, spearman
from judges.hygiene import hygiene_warnings
from judges.redact import redact_case
from judges.rubric import Rubric
from judges.scorers.registry import calls_judge, run_scorer
from judges.types import EvalCase, Score, Status


@dataclass
class LabelledCase:
    case: EvalCase
    positive: bool  # hallucinated


# Fewer scored cases than this and agreement metrics are noise: refused, with what is missing.
MIN_SCORED = 20
MIN_PER_CLASS = 5  # of each class among them; a quarter of min_scored when that is smaller
# The most common score holding this share of the scored cases or more: near-constant.
NEAR_CONSTANT = 0.9


@dataclass
class CalibrationReport:
    rubric: str
    n: int
    scored: int
    statuses: Counter[str] = field(default_factory=Counter)
    error_kinds: Counter[str] = field(default_factory=Counter)
    metrics: dict[str, Any] = field(default_factory=dict)
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # judge hygiene (judges/hygiene.py)

    @property
    def errors(self) -> int:
        return self.statuses.get(Status.ERROR.value, 0)

    @property
    def error_share(self) -> float:
        return self.errors / self.n if self.n else 0.0

    @property
    def refused(self) -> bool:
        """Agreement metrics withheld: too few scored cases (see `metrics["refused"]`)."""
        return "refused" in self.metrics or "error" in self.metrics

    def to_json(self) -> dict[str, Any]:
        return {
            "rubric": self.rubric,
            "n": self.n,
            "errors": self.errors,
            "error_share": round(self.error_share, 6),
            "error_kinds": dict(self.error_kinds),
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


def per_class_minimum(min_scored: int) -> int:
    return max(1, min(MIN_PER_CLASS, min_scored // 4))


def shortfall(labels: list[bool], min_scored: int = MIN_SCORED) -> str:
    """Why agreement metrics cannot be given on these scored cases' labels ("" if they can):
    how many more scored cases, or cases of the smaller class, are needed."""
    positives = sum(labels)
    negatives = len(labels) - positives
    per_class = per_class_minimum(min_scored)
    missing = []
    if len(labels) < min_scored:
        missing.append(f"{min_scored - len(labels)} more scored cases (minimum {min_scored})")
    for name, count in (("hallucinated", positives), ("faithful", negatives)):
        if count < per_class:
            missing.append(f"{per_class - count} more scored {name} cases (minimum {per_class})")
    if not missing:
        return ""
    return (
        f"agreement metrics withheld: {len(labels)} scored cases ({positives} hallucinated, "
        f"{negatives} faithful); needs {' and '.join(missing)}"
    )


def agreement(
    labels: list[bool], scores: list[Score], threshold: float, min_scored: int = MIN_SCORED
) -> dict[str, Any]:
    """Metrics over the cases that were scored; the score is 'goodness', so risk = 1 - score.
    Refused ({"refused": why, "needed": n}) below `min_scored` scored cases or
    `per_class_minimum(min_scored)` of a class."""
    ok = [(y, s) for y, s in zip(labels, scores, strict=True) if s.status is Status.OK]
    if not ok:
        return {"error": "no case was scored", "refused": "no case was scored"}
    y = [p[0] for p in ok]
    why = shortfall(y, min_scored)
    if why:
        pos = sum(y)
        per_class = per_class_minimum(min_scored)
        needed = max(min_scored - len(y), per_class - pos, per_class - (len(y) - pos), 0)
        return {"refused": why, "needed": needed, "scored": len(y), "positives": pos}
    # An OK score carries a value; Score types it Optional for the other statuses.
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


def constant_warnings(values: list[float]) -> list[str]:
    """A warning when the scores are constant or nearly so (NEAR_CONSTANT of them one value)."""
    if len(values) < 2:
        return []
    value, count = Counter(round(v, 6) for v in values).most_common(1)[0]
    if count == len(values):
        return [
            f"constant scores: all {count} scored cases got {value:g}; the judge gives one "
            "verdict whatever the answer (a base model, a prompt it ignores, or a broken "
            "rubric): its agreement is not evidence it judges"
        ]
    if count / len(values) >= NEAR_CONSTANT:
        return [
            f"near-constant scores: {count} of {len(values)} scored cases got {value:g}; "
            "check the judge gives different verdicts to different answers"
        ]
    return []


def error_warnings(report: CalibrationReport) -> list[str]:
    if not report.errors:
        return []
    kinds = ", ".join(f"{k} {v}" for k, v in report.error_kinds.most_common())
    return [
        f"{report.errors} of {report.n} cases ({report.error_share:.0%}) ended in errors "
        f"({kinds}): agreement describes only the {report.scored} that were scored"
    ]


async def calibrate(
    runtime: Runtime,
    rubric: Rubric,
    cases: list[LabelledCase],
    concurrency: int = 16,
    min_scored: int = MIN_SCORED,
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
    report.error_kinds.update(
        str(s.details.get("error_kind") or "input") for s in scores if s.status is Status.ERROR
    )
    report.metrics = agreement(labels, list(scores), rubric.pass_threshold, min_scored)
    ok = [(c.case, s) for c, s in zip(cases, scores, strict=True) if s.value is not None]
    judge = runtime.clients.judge
    judge_model = rubric.judge.model or (judge.model if judge is not None else None)
    lengths = [len(case.answer) for case, _ in ok]
    values = [float(s.value) for _, s in ok if s.value is not None]
    report.metrics["length_spearman"] = spearman(lengths, values)
    report.warnings = [*error_warnings(report), *constant_warnings(values)]
    report.warnings += hygiene_warnings(
        judge_model if calls_judge(rubric) else None,
        [c.case.model for c in cases if c.case.model],
        lengths,
        values,
    )
    models = sorted({c.case.model or "?" for c in cases})
    for model in models:
        idx = [i for i, c in enumerate(cases) if (c.case.model or "?") == model]
        report.per_model[model] = {
            "n": len(idx),
            **agreement(
                [labels[i] for i in idx],
                [scores[i] for i in idx],
                rubric.pass_threshold,
                min_scored,
            ),
        }
    return report


def render(report: CalibrationReport) -> str:
    """The text report: the error share first, then agreement (or why it is withheld), then
    per model, then warnings."""
    m = report.metrics
    kinds = ", ".join(f"{k} {v}" for k, v in report.error_kinds.most_common())
    lines = [
        f"errors: {report.errors}/{report.n} ({report.error_share:.0%})"
        + (f" — {kinds}" if kinds else ""),
        f"rubric {report.rubric}: {report.scored}/{report.n} scored "
        f"({', '.join(f'{k}={v}' for k, v in sorted(report.statuses.items()))})",
    ]
    if report.refused:
        lines.append(m.get("refused") or m.get("error", ""))
        lines += [f"warning: {w}" for w in report.warnings]
        return "\n".join(lines)
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
        if "refused" in pm or "error" in pm:
            why = "too few scored cases" if "needed" in pm else pm.get("error", "")
            needed = f" (needs {pm['needed']} more)" if "needed" in pm else ""
            lines.append(f"  {model:<24} {pm['n']:>4}  {why}{needed}")
            continue
        pauc = "  n/a" if pm["auroc"] is None else f"{pm['auroc']:.3f}"
        lines.append(
            f"  {model:<24} {pm['n']:>4} {pm['positives']:>4} {pauc:>6} "
            f"{pm['balanced_accuracy']:>6.3f} {pm['f1']:>6.3f}"
        )
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)
