"""Recovery after back-pressure in real processes (issue 26 §2): an `evaluator worker`
process behind `worker.max_queue_depth = 20` (traces, 8 per job), a loopback judge whose
calls hang until the test releases them, a backlog held back, then a healthy judge.

The scenario is bench/recovery.py's (one run), twice: the hang ends before any client
timeout, and (`hand_on`) it outlasts the judge client's 2 s timeout, so batch members are
retried in jobs of their own and the judge is released once the queue holds such a job.
Asserted here, as invariants that do not depend on the machine's speed: the queue, sampled
every 10 ms, never held more than the bound plus one batch, in traces (the members' own jobs
included); the backlog was held back and queued
by the intake loop (`released`), not by the sweeper (no sweep ran, and the sweeper would need
one minute per `room` traces: 12 minutes here); every trace ends as one `ok` record, judged
once. The timed comparison against the no-fault rate of the same run is bench/recovery.py's
(BENCHMARKS.md §16); this test prints it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.recovery import run

TRACES, BOUND, PER_JOB = 160, 20, 8


@pytest.mark.parametrize("hand_on", [False, True], ids=["hang", "hang_past_timeouts"])
def test_a_held_backlog_drains_at_the_workers_rate_within_the_bound(
    tmp_path: Path, redis_url: str, hand_on: bool
) -> None:
    r = run(redis_url, tmp_path, traces=TRACES, bound=BOUND, per_job=PER_JOB,
            hand_on=hand_on, deadline_s=240)  # fmt: skip
    print(r.line())
    assert r.samples > 50
    assert r.max_depth <= BOUND + PER_JOB - 1, r.line()
    if hand_on:  # members retried in jobs of their own were in the queue, and counted
        assert r.max_singles > 0, r.line()
    # Back-pressure held the backlog back, and the intake loop queued it.
    assert r.max_held >= TRACES - (BOUND + PER_JOB - 1), r.line()
    assert r.released >= r.max_held and r.held_back == r.released, r.line()
    assert "sweep:" not in r.worker_log  # no sweep moved anything
    # Well inside one sweeper period: the old path queued `room` traces per minute.
    assert r.recovery_s < 60, r.line()
    # Every trace once: the warm-up and both phases.
    assert r.records == {"ok": 2 * TRACES + 1} and r.distinct_traces == 2 * TRACES + 1
    if not hand_on:  # judged once each (past timeouts, the timed-out calls come on top)
        assert r.judge_calls == 2 * TRACES + 1
