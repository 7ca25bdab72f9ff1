"""The world around the certified-cascade scenario (tests/scenarios/test_certified_cascade.py):
its traffic, a loopback judge whose verdicts the test decides, a signed-webhook receiver, and
the worker's certification cron job run when the test says.

Traffic: RAG QA answers about pricing plans, one trace per session, all in the local scorer's
"qa" stratum. Local scores per answer template (judges.scorers.local, measured): grounded
0.967-0.994; hallucinated 0.071, 0.080, 0.520, 0.930 and one the cheap stage may never pass
(hard evidence); fluent hallucinated — a negation, a swapped plan, swapped quantities, that the
lexical scorer misses — 0.975-0.991. The judge's truth is the marker in the question ("ticket
00042H" fails, "ticket 00042G" passes), never what it reads in the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import redis
from arq import create_pool

from evaluator.analytics.certification_job import CRON_MINUTES
from evaluator.config.settings import Settings
from evaluator.intake.serialization import serialize
from evaluator.worker.app import arq_redis_settings, cron_name
from evaluator.worker.cascade_routing import calibration_point, cluster_key
from judges.types import EvalCase
from tests.conftest import chat_completion, rag_trace
from tests.polling import wait_until

RUBRIC = "faithfulness"
PLANS = ["Starter", "Team", "Pro", "Business", "Scale", "Growth", "Premium", "Plus"]
Answer = Callable[[str, int, int], str]  # (plan, price, storage) -> answer
GROUNDED: list[Answer] = [
    lambda p, c, s: (
        f"The {p} plan costs ${c} per user per month, billed annually. {p} "
        f"includes unlimited projects, {s} GB of storage and priority email support."
    ),
    lambda p, c, s: f"{p} includes unlimited projects and {s} GB of storage.",
    lambda p, c, s: (
        f"The {p} plan costs ${c} per user per month when billed annually, or "
        f"${c + 4} with monthly billing."
    ),
    lambda p, c, s: (
        f"All plans encrypt data at rest with AES-256, and {p} includes priority email support."
    ),
]
HALLUCINATED: list[Answer] = [
    lambda p, c, s: (
        f"The {p} plan costs ${c} per user per month. It also comes with a "
        "dedicated account manager and on-site training."
    ),
    lambda p, c, s: f"{p} includes unlimited projects and a lifetime warranty on hardware.",
    lambda p, c, s: (
        f"The {p} plan ships with a dedicated Oracle database cluster in Frankfurt "
        "and a free tablet."
    ),
    lambda p, c, s: (
        f"{p} comes with phone support around the clock and a yearly strategy workshop."
    ),
    lambda p, c, s: (
        f"The {p} plan costs ${c} per user per month, billed annually, and "
        "includes a personal success coach."
    ),
]
FLUENT_HALLUCINATED: list[Answer] = [
    lambda p, c, s: (
        f"{p} does not include unlimited projects, {s} GB of storage or priority email support."
    ),
    lambda p, c, s: (
        f"SSO is available on the {p} plan. All plans encrypt data at rest with AES-256."
    ),
    lambda p, c, s: f"The Enterprise plan costs ${c} per user per month, billed annually.",
    lambda p, c, s: f"{p} includes unlimited storage, {s} projects and priority email support.",
]
MARKER = re.compile(r"ticket (\d{5})([GH])")


@dataclass(frozen=True)
class Sent:
    """What the test knows about a trace it sent."""

    trace_id: str
    ticket: str
    session: str
    failing: bool  # the judge's verdict, decided by the test
    drawn: bool  # its session is in the calibration draw (a hash: predicted, not chosen)


def drawn(session: str, audit_rate: float) -> bool:
    """The worker's draw, recomputed: a session's cluster below `audit_rate`."""
    case = EvalCase("t", "s", "q", "a")  # the session decides the cluster, not the case
    return calibration_point(cluster_key(session, case), RUBRIC) < audit_rate


def make_trace(
    n: int, kind: str, audit_rate: float, session_of: int | None = None
) -> tuple[dict[str, Any], Sent]:
    """Trace number `n` in session number `session_of` (default: its own) with a grounded
    ("G"), hallucinated ("H") or fluent hallucinated ("F") answer."""
    plan, price, storage = PLANS[n % len(PLANS)], 12 + (n * 7) % 60, 50 * (1 + n % 9)
    docs = [
        f"The {plan} plan costs ${price} per user per month, billed annually. Monthly billing "
        f"costs ${price + 4}.",
        f"{plan} includes unlimited projects, {storage} GB of storage and priority email support.",
        "All plans encrypt data at rest with AES-256. SSO is available on the Enterprise plan "
        "only.",
    ]
    templates = {"G": GROUNDED, "H": HALLUCINATED, "F": FLUENT_HALLUCINATED}[kind]
    answer = templates[(n + n // 10) % len(templates)](plan, price, storage)
    mark = "G" if kind == "G" else "H"
    # The ticket makes every judge prompt distinct (no reply-cache hit) and carries the truth.
    question = f"What does the {plan} plan cost and what does it include? (ticket {n:05d}{mark})"
    session = f"session-{n if session_of is None else session_of:05d}"
    trace = rag_trace(f"t{n:05d}", answer=answer, question=question, documents=docs,
                      **{"session.id": session})  # fmt: skip
    sent = Sent(trace["trace_id"], f"{n:05d}", session, mark == "H", drawn(session, audit_rate))
    return trace, sent


FOLLOW_UP = 90_000  # the follow-up question of session n is trace FOLLOW_UP + n


def burst(
    numbers: range, kind: Callable[[int], str], audit_rate: float
) -> list[tuple[dict[str, Any], Sent]]:
    """Traces `numbers`, each opening its session; every tenth session (n % 10 == 3) asks a
    follow-up of the same verdict, so whichever trace of the cluster a certification keeps
    (one per cluster, drawn at random), its label is the same."""
    out = []
    for n in numbers:
        out.append(make_trace(n, kind(n), audit_rate))
        if n % 10 == 3:
            out.append(make_trace(FOLLOW_UP + n, kind(n), audit_rate, session_of=n))
    return out


def mixed_kind(n: int) -> str:
    """Ordinary traffic: 70 % of answers fail the judge, with spread local scores."""
    return "G" if n % 10 in (1, 4, 7) else "H"


# --- loopback servers -----------------------------------------------------------------------


class LoopbackJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible judge for the faithfulness prompt: every claim contradicted when the
    prompt's ticket is marked H, supported otherwise. `seen`: the tickets asked, in order."""

    lock = threading.Lock()
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        text = self.rfile.read(int(self.headers["Content-Length"])).decode()
        found = MARKER.findall(text)
        ticket, mark = found[-1] if found else ("?", "H")
        with self.lock:
            self.seen.append(ticket)
        verdict = "contradicted" if mark == "H" else "supported"
        claims = [{"claim": "the answer's claim", "context_ids": [1], "reason": "document 1",
                   "verdict": verdict}]  # fmt: skip
        body = json.dumps({"claims": claims, "no_factual_claims": False})
        reply = json.dumps(chat_completion(body)).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SignedWebhook(BaseHTTPRequestHandler):
    """Receives alerts as a user's endpoint would: (event, signature valid?) into `got`."""

    secret = "cert-webhook-secret"
    got: queue.Queue[tuple[dict[str, Any], bool]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(self.headers.get("X-Evaluator-Signature", ""), expected)
        self.got.put((json.loads(body), valid))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a loopback port for the duration of the generator; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- the worker's certification cron job, on the test's schedule ---------------------------


def _period(now: datetime) -> datetime:
    return now.replace(minute=now.minute - now.minute % CRON_MINUTES, second=0, microsecond=0)


class CertificationCron:
    """Run the worker's certification job when the test says. The job claims its period in
    Redis (`<prefix>:certification:<period>`, evaluator.analytics.certification_job); the
    test holds every period's claim for the next hour, so the worker's own cron finds its
    periods taken and does nothing, and to run the job it releases the current period's claim
    and enqueues the cron function by its name, as arq's scheduler does. A run is confirmed by
    the claim the job itself wrote ("1")."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = cron_name(settings, "certification")
        self.redis = redis.Redis.from_url(settings.redis.url)
        self.runs = 0

    def claim(self, period: datetime) -> str:
        return f"{self.settings.redis.key_prefix}:certification:{period:%Y%m%dT%H%M}"

    def hold(self) -> None:
        start = _period(datetime.now(UTC))
        for k in range(60 // CRON_MINUTES + 1):
            key = self.claim(start + timedelta(minutes=CRON_MINUTES * k))
            self.redis.set(key, "held by the test", ex=3600)

    def idle(self) -> bool:
        """No run of the job queued or running: arq deletes a job's key when it finishes (its
        in-progress key outlives a cron job by a minute, against a second run)."""
        return not any(self.redis.scan_iter(match=f"arq:job:{self.name}:*", count=1000))

    async def _enqueue(self, job_id: str) -> None:
        pool = await create_pool(arq_redis_settings(self.settings), job_serializer=serialize)
        try:
            job = await pool.enqueue_job(
                self.name, _job_id=job_id, _queue_name=self.settings.redis.queue_name
            )
            assert job is not None, f"job id {job_id} taken"
        finally:
            await pool.aclose()

    def run(self, until: Callable[[Callable[[], object], str], None] = wait_until) -> None:
        """One run of the job, returning when it has finished (`until` waits on a condition)."""
        for _attempt in range(3):  # a period boundary between release and run: again
            key = self.claim(_period(datetime.now(UTC)))
            self.redis.delete(key)
            self.runs += 1
            asyncio.run(self._enqueue(f"{self.name}:test-{self.runs}-{uuid.uuid4().hex[:6]}"))
            until(self.idle, "the certification job to finish")
            if self.redis.get(key) == b"1":
                return
            self.redis.set(key, "held by the test", ex=3600)
        raise AssertionError("the certification job never ran in the period it was released in")

    def close(self) -> None:
        self.redis.close()
