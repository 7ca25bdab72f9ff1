"""Certification rows round-trip on SQLite and PostgreSQL; the active set is the newest
certifying, non-withdrawn row per key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from evaluator.store import certifications as certs
from evaluator.store.store import Store

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _row(
    stratum: str, at: datetime, threshold: float | None, **kw: object
) -> certs.CertificationRecord:
    values: dict[str, object] = dict(
        id="", rubric="faithfulness", stage="2.1", judge_epoch="e1", prompt_version="v1",
        stratum=stratum, alpha=0.05, delta=0.1, threshold=threshold, labels=400, clusters=380,
        failing=120, misses=2, decided_share=0.31, fail_given_pass_upper=0.04,
        labels_needed=None if threshold is not None else 800, look=400, created_at=at,
    )  # fmt: skip
    values.update(kw)
    return certs.CertificationRecord(**values)  # type: ignore[arg-type]


def test_round_trip_and_active_set(store: Store) -> None:
    engine = store.engine
    qa_old = certs.write(engine, _row("qa", T0, 0.9))
    qa_new = certs.write(engine, _row("qa", T0 + timedelta(hours=1), 0.85))
    certs.write(engine, _row("summary", T0, 0.95))
    certs.write(engine, _row("summary", T0 + timedelta(hours=2), None))  # certifies nothing now
    dialogue = certs.write(engine, _row("dialogue", T0, 0.97))
    other_prompt = certs.write(engine, _row("qa", T0, 0.8, prompt_version="v2"))

    assert qa_old.id != qa_new.id and len(qa_old.id) == 16
    got = certs.get(engine, qa_new.id)
    assert got is not None
    assert got.created_at == T0 + timedelta(hours=1)
    assert (got.threshold, got.labels, got.clusters, got.misses) == (0.85, 400, 380, 2)
    assert got.fail_given_pass_upper == 0.04 and got.withdrawn_at is None

    assert certs.withdraw(engine, dialogue.id, "monitor: 9 failures in 60 audited passes")
    assert not certs.withdraw(engine, dialogue.id, "again")  # the first reason stays
    stored = certs.get(engine, dialogue.id)
    assert stored is not None and stored.withdrawn_reason is not None
    assert stored.withdrawn_reason.startswith("monitor") and stored.withdrawn_at is not None

    active = asyncio.run(certs.active_certifications(store))
    assert {a.id for a in active} == {qa_new.id, other_prompt.id}
    qa = next(a for a in active if a.id == qa_new.id)
    assert qa == certs.ActiveCertification(qa_new.id, "faithfulness", "2.1", "e1", "v1", "qa",
                                           0.85, 0.05, 0.1)  # fmt: skip
    assert len(certs.list_certifications(engine, "faithfulness")) == 6
    assert certs.list_certifications(engine, "other") == []

    certs.set_saved_calls(engine, {qa_new.id: 17})
    saved = certs.get(engine, qa_new.id)
    assert saved is not None and saved.saved_judge_calls == 17


def test_a_checkpoint_written_twice_is_one_row(store: Store) -> None:
    first = _row("qa", T0, 0.9, id="cafe0000cafe0000")
    again = _row("qa", T0 + timedelta(seconds=3), 0.9, id="cafe0000cafe0000")
    assert certs.write_once(store.engine, first)
    assert not certs.write_once(store.engine, again)  # a racing second run: nothing written
    assert [r.created_at for r in certs.list_certifications(store.engine)] == [T0]
