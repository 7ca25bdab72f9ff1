"""The shipped judge client against a real model server (issue 29).

    python -m bench.real_judge [--cases 3] [--requests 8] [--probe 40] [--json FILE]

Starts the real server of the tests (tests/real_model/server.py: llama.cpp through
llama-cpp-python, Gemma 3 270M Q4_K_M from the package registry, a base model) with its
per-request timings logged, and measures what ships — the real scorers' prompts through the
real `JudgeClient` with its shipped defaults — recording every HTTP exchange:

1. per rubric (the shipped rubrics' judged methods, plus faithfulness+relevance combined),
   `--cases` demo traces one after another: latency p50/p90 per HTTP call, prompt and
   completion tokens (the server's usage), the share of replies cut at the token limit
   (finish_reason = length) and of replies that are not one JSON object, the verdicts'
   outcomes (ok / error kinds), and the prompt tokens the server reused from its prefix cache
   (llama.cpp's log: "N prefix-match hit, remaining M prompt tokens to eval");
2. throughput against client concurrency: `--requests` answer-relevance verdicts at a fixed
   limit of 1, 2, 4 and 8 calls in flight, then with the adaptive limit (starts at 2, up to
   judge.max_concurrency = 32), whose final value is reported;
3. a confidence–accuracy curve from token log-probabilities on ../shared/data (RAGTruth QA):
   `--probe` answers (half hallucinated, seeded), one-token "yes"/"no" probe of support with
   logprobs; confidence = the larger of the two normalised probabilities. This probe is not
   the shipped judge prompt: it is the input a judge cascade would need, measured where this
   server returns log-probabilities.

The model is a base model: these numbers describe the endpoint and the client, not judge
quality. Results: BENCHMARKS.md, "Real model server (issue 29)".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evaluator.config.rubrics import load_rubrics
from judges.llm.client import JudgeClient
from judges.rubric import METHODS, Rubric
from judges.scorers.registry import needs_judge, run_scorer
from judges.types import Clients, Status
from tests.real_model.server import MODEL_ALIAS, RealServer, missing, start

from .prefix_share import load_cases
from .report import command_line, fmt, machine, table

REPO = Path(__file__).resolve().parent.parent
RAGTRUTH = REPO.parent / "shared" / "data" / "ragtruth_qa" / "ragtruth_qa.jsonl"
_AGENT = {"tool_selection"}
_PERF = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")
_PREFIX = re.compile(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens")


@dataclass
class Call:
    tag: str
    latency_s: float
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish: str | None = None
    json_object: bool = False  # the reply text is one JSON object as it stands
    format: str = ""  # response_format type sent ("none": left out)


@dataclass
class Recorder(httpx.AsyncBaseTransport):
    """Times and reads every exchange the client makes (the client's own retries included)."""

    inner: httpx.AsyncBaseTransport = field(default_factory=httpx.AsyncHTTPTransport)
    tag: str = ""
    calls: list[Call] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content or b"{}")
        start_t = time.perf_counter()
        fmt_sent = (sent.get("response_format") or {}).get("type", "none")
        try:
            response = await self.inner.handle_async_request(request)
            body = await response.aread()
        except httpx.TransportError:  # a timeout or a dropped connection: status 0
            self.calls.append(Call(self.tag, time.perf_counter() - start_t, 0, format=fmt_sent))
            raise
        call = Call(self.tag, time.perf_counter() - start_t, response.status_code)
        call.format = fmt_sent
        if response.status_code == 200:
            doc = json.loads(body)
            usage, choice = doc.get("usage") or {}, doc["choices"][0]
            call.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            call.completion_tokens = int(usage.get("completion_tokens") or 0)
            call.finish = choice.get("finish_reason")
            call.json_object = _is_object(choice["message"].get("content") or "")
        self.calls.append(call)
        return httpx.Response(response.status_code, headers=response.headers, content=body)


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def client(server: RealServer, recorder: Recorder, **overrides: Any) -> JudgeClient:
    """The shipped client with the shipped defaults (settings.toml [judge]), except where
    it sends: the real server, through a recording httpx transport, no reply cache."""
    options: dict[str, Any] = {"timeout_s": 30.0, "max_retries": 2, "max_concurrency": 32,
                               "max_output_tokens": 1024, "max_wait_s": 20.0}  # fmt: skip
    options.update(overrides)
    return JudgeClient(
        base_url=server.base_url, model=MODEL_ALIAS, http_transport="httpx",
        http_client=httpx.AsyncClient(transport=recorder, timeout=None), **options,
    )  # fmt: skip


def measured(rubric: Rubric) -> Rubric:
    """The rubric with a judged method (a cascade measured by its judge call; the cascade's
    own options dropped, as a judge-method rubric would not have them)."""
    if needs_judge(rubric) or "judge" not in METHODS[rubric.scorer]:
        return rubric
    return rubric.model_copy(update={"method": "judge", "options": {}})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rubric_set() -> list[tuple[str, Rubric, str]]:
    """(label, rubric as measured, which sample traces) for every judged shipped rubric."""
    out = []
    for rubric in sorted(
        load_rubrics(REPO / "evaluator" / "rubrics").rubrics, key=lambda r: r.name
    ):
        r = measured(rubric)
        if not needs_judge(r) or r.scorer == "self_consistency":  # needs a generator: tests
            continue
        agentic = r.scorer in _AGENT or bool(r.llm_rubric and "tool_calls" in r.llm_rubric.inputs)
        out.append((f"{r.name} ({r.resolved_method})", r, "agent" if agentic else "rag"))
    combined = Rubric(name="combined", version="1", scorer="faithfulness", method="combined")
    out.append(("faithfulness+relevance (combined)", combined, "rag"))
    return out


async def per_rubric(server: RealServer, n_cases: int) -> list[dict[str, Any]]:
    cases = {"rag": load_cases("ragtruth_sample.jsonl")[:n_cases],
             "agent": load_cases("agent_sample.jsonl")[:n_cases]}  # fmt: skip
    rows = []
    for label, rubric, kind in rubric_set():
        recorder = Recorder(tag=label)
        judge = client(server, recorder, max_concurrency=1, initial_concurrency=1)
        outcomes: Counter[str] = Counter()
        for case in cases[kind]:  # one at a time: the server log's timings follow in order
            score = await run_scorer(case, rubric, Clients(judge=judge))
            kind_ = score.details.get("error_kind") or _kind(score)
            outcomes[score.status.value if score.status is not Status.ERROR else kind_] += 1
        await judge.aclose()
        rows.append({"rubric": label, "calls": [asdict(c) for c in recorder.calls],
                     "outcomes": dict(outcomes)})  # fmt: skip
    return rows


def _kind(score: Any) -> str:
    return str(score.details.get("error_kind") or "error")


async def throughput(server: RealServer, n: int) -> list[dict[str, Any]]:
    rubric = measured(next(r for r in load_rubrics(REPO / "evaluator" / "rubrics").rubrics
                           if r.name == "answer_relevance"))  # fmt: skip
    cases = (load_cases("ragtruth_sample.jsonl") * 2)[:n]
    rows = []
    for limit in (1, 2, 4, 8, None):  # None: the adaptive limit, as shipped
        recorder = Recorder(tag=str(limit))
        fixed = {} if limit is None else {"max_concurrency": limit, "initial_concurrency": limit}
        judge = client(server, recorder, **fixed)
        start_t = time.perf_counter()
        scores = await asyncio.gather(*(run_scorer(c, rubric, Clients(judge=judge)) for c in cases))
        wall = time.perf_counter() - start_t
        rows.append({
            "limit": "adaptive" if limit is None else limit,
            "final_limit": judge.concurrency.limit,
            "wall_s": wall,
            "verdicts_per_min": 60 * len(cases) / wall,
            "ok": sum(s.status is Status.OK for s in scores),
            "errors": dict(Counter(_kind(s) for s in scores if s.status is Status.ERROR)),
            "http_calls": len(recorder.calls),
            "timeouts_or_5xx": sum(c.status != 200 for c in recorder.calls),
            "latency_p50_s": pct([c.latency_s for c in recorder.calls], 0.5),
        })  # fmt: skip
        await judge.aclose()
    return rows


def probe_items(n: int, seed: int = 29) -> list[tuple[str, str, str, bool]]:
    """(question, passages, answer, hallucinated): n answers of RAGTruth QA, half each."""
    bad, good = [], []
    for line in RAGTRUTH.read_text("utf-8").splitlines():
        doc = json.loads(line)
        for r in doc["responses"]:
            item = (doc["source"]["question"], doc["source"]["passages"], r["response"],
                    bool(r["labels"]))  # fmt: skip
            (bad if item[3] else good).append(item)
    rng = random.Random(seed)
    return rng.sample(bad, n // 2) + rng.sample(good, n - n // 2)


async def logprob_probe(server: RealServer, n: int) -> dict[str, Any]:
    prompt = (
        "Passages:\n{p}\n\nQuestion: {q}\n\nAnswer: {a}\n\n"
        "Is every statement of the answer supported by the passages? Reply yes or no."
    )
    points: list[tuple[float, bool]] = []  # (confidence, verdict correct)
    missing_lp = failed = 0
    async with httpx.AsyncClient(timeout=120) as http:
        for q, p, a, hallucinated in probe_items(n):
            text = prompt.format(p=p[:4000], q=q, a=a)
            body = {
                "model": MODEL_ALIAS, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                "top_logprobs": 10, "messages": [{"role": "user", "content": text}],
            }  # fmt: skip
            reply = await http.post(f"{server.base_url}/chat/completions", json=body)
            if reply.status_code != 200:
                failed += 1
                continue
            choice = reply.json()["choices"][0]
            top = (((choice.get("logprobs") or {}).get("content") or [{}])[0]
                   .get("top_logprobs") or [])  # fmt: skip
            yes = sum(math.exp(t["logprob"]) for t in top if t["token"].strip().lower() == "yes")
            no = sum(math.exp(t["logprob"]) for t in top if t["token"].strip().lower() == "no")
            if yes + no == 0:
                missing_lp += 1
                continue
            p_yes = yes / (yes + no)
            points.append((max(p_yes, 1 - p_yes), (p_yes >= 0.5) == (not hallucinated)))
    bins = []
    for low, high in ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)):
        inside = [ok for conf, ok in points if low <= conf < high]
        bins.append({"confidence": f"[{low:.1f}, {min(high, 1.0):.1f}{']' if high > 1 else ')'}",
                     "n": len(inside),
                     "accuracy": sum(inside) / len(inside) if inside else None})  # fmt: skip
    return {"n": n, "with_logprobs": len(points), "without_yes_no": missing_lp, "failed": failed,
            "accuracy": sum(ok for _, ok in points) / len(points) if points else None,
            "bins": bins}  # fmt: skip


def server_reuse(log: str) -> list[tuple[int, int]]:
    """(prompt tokens evaluated, prefix tokens reused) per request, in order (verbose log)."""
    out, reused = [], 0
    for line in log.splitlines():
        hit = _PREFIX.search(line)
        if hit:
            reused = int(hit.group(1))
        perf = _PERF.search(line)
        if perf:
            out.append((int(perf.group(1)), reused))
            reused = 0
    return out


def rubric_rows(rows: list[dict[str, Any]], reuse: list[tuple[int, int]]) -> list[list[str]]:
    table_rows, at = [], 0
    for row in rows:
        calls = [Call(**c) for c in row["calls"]]
        ok = [c for c in calls if c.status == 200]
        mine = reuse[at : at + len(ok)]
        at += len(ok)
        reused = sum(r for _, r in mine)
        total = sum(e + r for e, r in mine)
        lat = [c.latency_s for c in calls]
        table_rows.append([
            row["rubric"], str(len(calls)),
            f"{fmt(pct(lat, 0.5))} / {fmt(pct(lat, 0.9))}" if lat else "-",
            fmt(statistics.mean(c.prompt_tokens for c in ok)) if ok else "-",
            fmt(statistics.mean(c.completion_tokens for c in ok)) if ok else "-",
            f"{sum(c.finish == 'length' for c in ok)}/{len(ok)}",
            f"{sum(not c.json_object and c.finish != 'length' for c in ok)}/{len(ok)}",
            f"{reused / total:.0%}" if total else "-",
            ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items())),
            ",".join(sorted({c.format for c in calls})),
        ])  # fmt: skip
    return table_rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The three parts in turn, the raw results written after each (a long run on a loaded
    machine keeps what it measured). The probe gets its own server: log-probabilities need
    llama.cpp's logits for every token (`--logits_all`), which slows every request ~40 %."""
    reason = missing()
    if reason:
        raise SystemExit(f"bench.real_judge {reason}")
    logs = Path(tempfile.mkdtemp(prefix="real-judge-"))
    started = time.perf_counter()
    doc: dict[str, Any] = {"machine": machine(), "command": command_line(), "rubrics": [],
                           "reuse": [], "throughput": [], "probe": None}  # fmt: skip

    def save() -> None:
        doc["wall_s"] = time.perf_counter() - started
        if args.json:
            args.json.write_text(json.dumps(doc, indent=1))

    server = start(logs / "server.log", verbose=True)
    try:
        doc["rubrics"] = await per_rubric(server, args.cases)
        doc["reuse"] = server_reuse(server.log.read_text(errors="replace"))
        save()
        doc["throughput"] = await throughput(server, args.requests)
        save()
    finally:
        server.stop()
    if args.probe:
        server = start(logs / "probe.log", logprobs=True)
        try:
            doc["probe"] = await logprob_probe(server, args.probe)
        finally:
            server.stop()
    save()
    return doc


def render(doc: dict[str, Any]) -> str:
    head = ["rubric (method)", "HTTP calls", "latency p50 / p90 s", "prompt tok",
            "completion tok", "cut at limit", "not one JSON object", "prefix reused", "verdicts",
            "format sent"]  # fmt: skip
    parts = [f"$ {doc['command']}\nmachine: {doc['machine']}\n",
             table(head, rubric_rows(doc["rubrics"], doc["reuse"])), ""]  # fmt: skip
    head2 = ["client limit", "final limit", "wall s", "verdicts/min", "ok", "errors",
             "HTTP calls", "non-200", "latency p50 s"]  # fmt: skip
    parts.append(table(head2, [[str(r["limit"]), str(r["final_limit"]), fmt(r["wall_s"]),
                                fmt(r["verdicts_per_min"]), str(r["ok"]),
                                ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "-",
                                str(r["http_calls"]), str(r["timeouts_or_5xx"]),
                                fmt(r["latency_p50_s"])] for r in doc["throughput"]]))  # fmt: skip
    probe = doc["probe"]
    if probe:
        acc = "n/a" if probe["accuracy"] is None else f"{probe['accuracy']:.2f}"
        parts += ["", f"log-probability probe: n = {probe['n']}, {probe['with_logprobs']} with a "
                  f"yes/no log-probability, accuracy {acc}",
                  table(["confidence", "n", "accuracy"],
                        [[b["confidence"], str(b["n"]),
                          "-" if b["accuracy"] is None else f"{b['accuracy']:.2f}"]
                         for b in probe["bins"]])]  # fmt: skip
    parts.append(f"\nwall time {doc['wall_s']:.0f} s")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3, help="traces per rubric")
    parser.add_argument("--requests", type=int, default=8, help="verdicts per concurrency level")
    parser.add_argument("--probe", type=int, default=40, help="answers in the logprob probe")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args(argv)
    print(render(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
