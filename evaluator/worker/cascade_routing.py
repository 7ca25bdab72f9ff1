"""What a cascade's cheap stage may decide for one trace (`Clients.cascade_route`, issue 28).

Per trace and rubric the router answers two questions, both before any judge call:

- **Is the trace's cluster in the calibration draw?** The cluster is the trace's session
  (``session.id``), else the text of its retrieved documents, else the trace itself. The draw
  is ``calibration_point(cluster, rubric) < audit_rate``: a blake2b hash of the cluster key
  and the rubric name, read as a number in [0, 1). Guarantee: each cluster is in the draw
  with probability ``audit_rate`` (for blake2b taken as a random function of its input), all
  of a cluster's traces or none, and the draw reads neither the cheap score nor the verdict —
  so the labels it yields are a uniform cluster sample of each stratum's traffic, what
  `evalcore.certification.certify` assumes (it then keeps one item per cluster).
- **Which certification covers it?** The one in force for (rubric, cheap stage, judge epoch,
  prompt version, stratum): the cheap stage is the local method's version
  (`judges.scorers.faithfulness.cheap_stage`), the judge epoch is the rubric's evaluator
  epoch (`judges.scorers.identity`, what the records carry: it covers the judge endpoint and
  model, the prompts and the rubric's verdict-shaping content — not ``audit_rate``,
  ``alpha``, ``delta``, nor ``local_threshold`` with a judge, which decide no judge verdict),
  the prompt version is the app's (``""`` when none). Changing alpha or delta keeps the key:
  a certification whose alpha or delta is looser than the rubric's is then not used, and the
  job writes one at the new values. A change of any key element finds no certification: the
  judge decides again until one is computed for the new key.

With a `TwoStage` (evaluator.worker.two_stage), the route also carries stage 2's draw for
the certified-pass region (`CascadeRoute.sample`: the same point compared with p2|1 ≥
audit_rate, so the calibration draw is a subset of the judged clusters) and `bind` gives the
scorer stage 1's CPU-budget admission (`Clients.stage_one`).

The certifications in force are read from their source at most once per ``ttl_s`` per
process (a withdrawal takes effect within ``ttl_s``); a failing read raises (the job is
retried, evaluator.worker.faults) rather than guessing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from evalcore.routing import draw_point
from evaluator.analytics.certification_view import RubricNow
from evaluator.worker.two_stage import TwoStage
from judges.rubric import Rubric
from judges.scorers.faithfulness import cheap_stage
from judges.scorers.registry import identity_for
from judges.types import CascadeRoute, CertifiedThreshold, Clients, EvalCase

Key = tuple[str, str, str, str, str]  # rubric, stage, judge_epoch, prompt_version, stratum


class Certified(Protocol):
    """A certification in force (evaluator.store.certifications.ActiveCertification)."""

    @property
    def id(self) -> str: ...
    @property
    def rubric(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def judge_epoch(self) -> str: ...
    @property
    def prompt_version(self) -> str: ...
    @property
    def stratum(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def alpha(self) -> float: ...
    @property
    def delta(self) -> float: ...


CertificationSource = Callable[[], Awaitable[Sequence[Certified]]]
RouteFn = Callable[[str, str], Awaitable[CascadeRoute]]


def _hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def cluster_key(session_id: str | None, case: EvalCase) -> str:
    """The calibration draw's cluster: the session, else the documents' text, else the trace."""
    if session_id:
        return "session:" + _hash(session_id).hex()
    texts = [c.text for c in case.contexts]
    if any(t.strip() for t in texts):
        return "contexts:" + _hash("\x1f".join(texts)).hex()
    return "trace:" + _hash(case.trace_id).hex()


def calibration_point(cluster: str, rubric: str) -> float:
    """A stable point in [0, 1) for (cluster, rubric); the cluster is drawn when it is below
    the rubric's audit_rate (keyed by the rubric too: two rubrics draw independently)."""
    return draw_point(rubric, cluster)


def key_of(rubric: Rubric, clients: Clients, prompt_version: str | None, stratum: str) -> Key:
    epoch = identity_for(rubric, clients).epoch()
    return (rubric.name, cheap_stage(), epoch, prompt_version or "", stratum)


def rubrics_now(rubrics: Iterable[Rubric], clients: Clients) -> dict[str, RubricNow | None]:
    """Per rubric, what a router with `clients` uses for it today (None: no cheap stage):
    what `evaluator certify` and the page compare stored certifications with."""
    from judges.scorers.faithfulness import advisory_note

    out: dict[str, RubricNow | None] = {}
    for rubric in rubrics:
        if rubric.resolved_method != "cascade":
            out[rubric.name] = None
            continue
        opts = rubric.typed_options
        judged = clients.judge is not None
        out[rubric.name] = RubricNow(
            cheap_stage(),
            key_of(rubric, clients, None, "")[2],
            float(opts.alpha),
            float(opts.delta),
            judged,
            None if judged else advisory_note([rubric.name]),
        )
    return out


@dataclass
class CascadeRouter:
    """The per-process router: certifications cached for `ttl_s`, one route per trace."""

    source: CertificationSource
    rubric_of: Callable[[str], Rubric | None]
    clients: Clients  # the runtime's: the judge named in the epoch
    ttl_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    two_stage: TwoStage | None = None  # None: p1 = 1 and the calibration draw alone
    _active: dict[Key, Certified] = field(default_factory=dict, init=False)
    _read_at: float | None = field(default=None, init=False)

    async def active(self) -> dict[Key, Certified]:
        """The certifications in force by key, read again once `ttl_s` has passed."""
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.ttl_s:
            rows = await self.source()
            self._active = {
                (c.rubric, c.stage, c.judge_epoch, c.prompt_version, c.stratum): c for c in rows
            }
            self._read_at = now
        return self._active

    async def route(
        self, rubric_name: str, stratum: str, cluster: str, prompt_version: str | None
    ) -> CascadeRoute:
        rubric = self.rubric_of(rubric_name)
        if rubric is None:
            return CascadeRoute(cluster=cluster)  # not a rubric of this runtime: the judge
        opts = rubric.typed_options  # a cascade's (judges/options.py); others use no route
        audit_rate = float(getattr(opts, "audit_rate", 0.0))
        alpha, delta = getattr(opts, "alpha", 0.0), getattr(opts, "delta", 0.0)
        point = calibration_point(cluster, rubric_name)
        calibration = point < audit_rate
        sample = None
        if self.two_stage is not None:
            plan = self.two_stage.plan(rubric_name, getattr(opts, "judge_rate", None), audit_rate)
            sample = lambda f: plan.sample(f, point)  # noqa: E731 - bound to this trace's point
        found = (await self.active()).get(key_of(rubric, self.clients, prompt_version, stratum))
        cert = None
        if found is not None and found.alpha <= alpha and found.delta <= delta:
            cert = CertifiedThreshold(found.id, found.threshold, found.alpha, found.delta)
        return CascadeRoute(cert, calibration, audit_rate, cluster, sample)

    def for_trace(self, case: EvalCase, session_id: str | None) -> RouteFn:
        """`Clients.cascade_route` for one trace (the cluster key is hashed on first ask:
        traces no cascade scores cost nothing)."""
        prompt_version = case.labels.get("prompt_version")
        cluster: list[str] = []

        async def ask(rubric_name: str, stratum: str) -> CascadeRoute:
            if not cluster:
                cluster.append(cluster_key(session_id, case))
            return await self.route(rubric_name, stratum, cluster[0], prompt_version)

        return ask

    def bind(self, clients: Clients, case: EvalCase, session_id: str | None) -> Clients:
        """`clients` with this trace's route (and stage 1's admission, with a TwoStage)."""
        route = self.for_trace(case, session_id)
        if self.two_stage is None:
            return dataclasses.replace(clients, cascade_route=route)
        one = self.two_stage.stage_one(case.trace_id)
        return dataclasses.replace(clients, cascade_route=route, stage_one=one)
