"""Negative feedback that arrives after its trace feeds the tail rules.

The app's enqueue-time `feedback=` signal and a span's plain `feedback` attribute reach the
negative-feedback tail rule on their way in. A thumbs-down that comes later — POST
/api/feedback, `evaluator feedback import`, `evaluator.feedback.*` on an OTLP span — goes
through here once its rows are written:

1. the stored trace's signal (`traces.feedback`) turns negative (`NEGATIVE_SIGNAL`), so the
   intake's stored-trace lookup sees it from now on, and — unless the rule is off — its
   records' inclusion probability becomes 1 (the rule takes every negative trace);
2. when the deployment samples on negative feedback (`sampling.always_on_negative_feedback`)
   and the writer has Redis, each trace that *turned* negative is pushed on the intake list
   in the app's wire format with the feedback signal set: the worker's drain samples it as
   `tail_feedback` and evaluates it like any other tail trace.

Idempotent at every step: only a trace whose signal was not negative yet is pushed (a
second thumbs-down, or the same feedback re-sent, pushes nothing; re-sending it after a
failed push, which leaves the signal unmarked, retries the push), the drain queues a trace
once while it is queued (its own job `evaluate:tail:{trace}`, or its marker in a live batch
job), and a record is unique per trace, span, rubric and version,
so a trace already evaluated is never written twice.
Feedback about a trace not stored yet only stores the feedback row.

    intake = FeedbackIntake(redis_client, key_prefix="evaluator", on_negative_feedback=True)
    feed_tail_rules(store, ["t1", "t2"], intake)     # -> TailOutcome(marked=[...], enqueued=n)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from evaluator.intake.enqueue import intake_key
from evaluator.intake.wire import encode
from evaluator.sampling import Signals
from evaluator.store.store import Store
from evaluator.store.tail import mark_negative_feedback

log = logging.getLogger("evaluator.sources.feedback_tail")

BAD_BELOW = 0.5  # a feedback value (goodness in [0, 1]) under this is a negative verdict
NEGATIVE_SIGNAL = -1.0  # the tail-rule signal stored and sent for it (negative = bad)


def is_negative(row: Mapping[str, Any]) -> bool:
    """A feedback row (evaluator.sources.feedback.feedback_row) that says the answer was bad:
    thumbs down, a score or a label below the bad mark. A bare note says nothing."""
    value = row.get("value")
    return value is not None and value < BAD_BELOW


@dataclass(frozen=True)
class FeedbackIntake:
    """Where a trace turned negative by late feedback is enqueued, and whether it is."""

    redis: redis.Redis
    key_prefix: str
    on_negative_feedback: bool = True


@dataclass
class TailOutcome:
    marked: list[str] = field(default_factory=list)  # stored traces whose signal turned negative
    enqueued: int = 0
    # Why marked traces were not enqueued: "no_redis", "rule_off" or "redis_error".
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"marked": len(self.marked), "enqueued": self.enqueued, "skipped": self.skipped}


def feed_tail_rules(
    store: Store, trace_ids: Iterable[str], intake: FeedbackIntake | None
) -> TailOutcome:
    """Mark the stored traces negative and enqueue those that turned negative now.

    `trace_ids` are the traces of newly written negative rows. Without `intake` (no Redis:
    e.g. a CLI import) only the stored signal changes. The push happens inside the marking
    transaction: a failed push (logged, not raised — the feedback rows are stored and the
    write must not fail over an enqueue) leaves the signal unmarked, so the next thumbs-down
    on that trace tries again instead of finding it "already negative" and never enqueued.
    """
    ids = list(trace_ids)
    if intake is None or not intake.on_negative_feedback:
        # Without an intake the rule's setting is unknown here: taken as on (the default).
        certain = intake is None or intake.on_negative_feedback
        marked = mark_negative_feedback(store.engine, ids, NEGATIVE_SIGNAL, certain=certain)
        skipped = "no_redis" if intake is None else "rule_off"
        return TailOutcome(marked=marked, skipped=skipped if marked else None)

    def push(marked: list[str]) -> None:
        signals = Signals(feedback=NEGATIVE_SIGNAL)
        intake.redis.rpush(intake_key(intake.key_prefix), *(encode(t, signals) for t in marked))

    try:
        marked = mark_negative_feedback(store.engine, ids, NEGATIVE_SIGNAL, then=push)
    except (redis.RedisError, OSError) as exc:
        log.warning("feedback: traces not enqueued (their signal stays unmarked): %s", exc)
        return TailOutcome(skipped="redis_error")
    return TailOutcome(marked=marked, enqueued=len(marked))
