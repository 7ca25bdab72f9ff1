"""Test helpers for the certified cascade: write a certification the worker's router finds."""

from __future__ import annotations

from evaluator.store import certifications as certs
from evaluator.worker.cascade_routing import key_of
from evaluator.worker.runtime import Runtime
from judges.scorers.faithfulness import stratum_of
from judges.scorers.local import score_faithfulness_local
from judges.types import EvalCase


def stratum_for(case: EvalCase) -> str:
    """The stratum the cascade will file `case` under (the local scorer's detected task)."""
    return stratum_of(score_faithfulness_local(case))


def certify(
    runtime: Runtime,
    stratum: str,
    threshold: float,
    *,
    rubric: str = "faithfulness",
    prompt_version: str | None = None,
) -> str:
    """Store a certification of `stratum` at `threshold` under the runtime's key (the one its
    router looks up: local method version, the rubric's epoch with this judge); its id."""
    found = runtime.rubrics.by_name(rubric)
    assert found is not None
    r, stage, epoch, pv, st = key_of(found, runtime.clients, prompt_version, stratum)
    row = certs.CertificationRecord(
        id="", rubric=r, stage=stage, judge_epoch=epoch, prompt_version=pv, stratum=st,
        alpha=0.05, delta=0.1, threshold=threshold, labels=300, clusters=300, failing=60,
        misses=0, decided_share=0.4,
    )  # fmt: skip
    return certs.write(runtime.store.engine, row).id
