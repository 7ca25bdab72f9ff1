"""The loopback judge (bench/judge_server.py) plus OpenAI's Batch API file and batch endpoints.

    python -m bench.batch_server --port 8099 --batch-delay 5
    python -m bench.batch_server --batch-outcome expired --answered-share 0.5

    POST /v1/files                  multipart: purpose=batch, file=<JSONL of requests>
    GET  /v1/files/{id}/content     the uploaded file, or a batch's output / error file
    POST /v1/batches                {input_file_id, endpoint, completion_window}
    GET  /v1/batches                the batches, most recent first (one page, at most 100)
    GET  /v1/batches/{id}           in_progress until --batch-delay seconds have passed, then
                                    the outcome (completed | failed | expired | cancelled)
    GET  /batch-stats               files, batches, lines answered, polls, downloads

Each request line is answered by the judge's own `_completion` (the same replies, token counts
and `/stats` as online calls), when the batch is first read after its delay. Faults, set per
server (tests change `server.behaviour` between batches): every k-th line an error (HTTP 400 in
the error file), each output line written twice (a re-delivered result), a failed batch (no
output, the provider's errors), an expired or cancelled one answering only the first
`answered_share` of its lines (the others in its error file with code batch_expired /
batch_cancelled, as OpenAI writes them, or left out of both files with `omit_unanswered`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .judge_server import JudgeServer, ServerConfig

OUTCOMES = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchBehaviour:
    delay_s: float = 0.0  # from creation to the outcome
    outcome: str = "completed"
    error_every: int = 0  # every k-th line of a batch fails (0 = none)
    duplicate_lines: bool = False  # every output line twice
    answered_share: float = 1.0  # share of lines answered by an expired/cancelled batch
    # The unanswered lines of an expired/cancelled batch go to its error file with code
    # batch_expired / batch_cancelled, as OpenAI does; True leaves them out of both files.
    omit_unanswered: bool = False


@dataclass
class BatchStats:
    files_uploaded: int = 0
    batches_created: int = 0
    lines_submitted: int = 0
    lines_answered: int = 0
    lines_failed: int = 0
    polls: int = 0
    lists: int = 0
    downloads: int = 0
    started_at: float = field(default_factory=time.time)


@dataclass
class _Batch:
    body: dict[str, Any]
    created: float
    behaviour: BatchBehaviour  # as it was when the batch was created


class BatchJudgeServer(JudgeServer):
    """`await start()` returns the base URL (…/v1), as JudgeServer's does."""

    def __init__(self, config: ServerConfig, behaviour: BatchBehaviour | None = None) -> None:
        super().__init__(config)
        self.behaviour = behaviour or BatchBehaviour()
        self.batch_stats = BatchStats()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, _Batch] = {}

    async def _dispatch(
        self, method: str, path: str, body: bytes, reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, str], bytes] | None:
        route = path.removeprefix("/v1")
        if method == "GET" and route == "/batch-stats":
            return _ok(asdict(self.batch_stats))
        if method == "POST" and route == "/files":
            return self._upload(body)
        if method == "GET" and route.startswith("/files/") and route.endswith("/content"):
            file_id = route.removeprefix("/files/").removesuffix("/content")
            if file_id not in self.files:
                return _missing(f"no file {file_id}")
            self.batch_stats.downloads += 1
            return 200, {}, self.files[file_id]
        if method == "POST" and route == "/batches":
            return self._create(body)
        if method == "GET" and route == "/batches":
            self.batch_stats.lists += 1
            data = [b.body for b in reversed(self.batches.values())][:100]
            page = {"object": "list", "data": data, "has_more": len(self.batches) > 100}
            return _ok({**page, "first_id": data[0]["id"] if data else None,
                        "last_id": data[-1]["id"] if data else None})  # fmt: skip
        if method == "GET" and route.startswith("/batches/"):
            return self._retrieve(route.removeprefix("/batches/"))
        return await super()._dispatch(method, path, body, reader)

    # --- files ---------------------------------------------------------------------------

    def _upload(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = multipart_fields(body)
        if parts.get("purpose") != b"batch" or "file" not in parts:
            return 400, {}, _error("expected multipart fields purpose=batch and file")
        file_id = self._store(parts["file"])
        self.batch_stats.files_uploaded += 1
        return _ok(_file_object(file_id, parts["file"], "batch"))

    def _store(self, content: bytes) -> str:
        file_id = f"file-{len(self.files) + 1:06d}"
        self.files[file_id] = content
        return file_id

    # --- batches -------------------------------------------------------------------------

    def _create(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            request = json.loads(raw)
        except json.JSONDecodeError:
            return 400, {}, _error("body is not JSON")
        input_id = request.get("input_file_id")
        if input_id not in self.files:
            return 400, {}, _error(f"no file {input_id}")
        if request.get("endpoint") != "/v1/chat/completions":
            return 400, {}, _error("this server batches /v1/chat/completions only")
        batch_id = f"batch_{len(self.batches) + 1:06d}"
        lines = _lines(self.files[input_id])
        now = time.time()
        body = {
            "id": batch_id,
            "object": "batch",
            "endpoint": request["endpoint"],
            "errors": None,
            "input_file_id": input_id,
            "completion_window": request.get("completion_window", "24h"),
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(now),
            "metadata": request.get("metadata"),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        }
        self.batches[batch_id] = _Batch(body, time.monotonic(), _copy(self.behaviour))
        self.batch_stats.batches_created += 1
        self.batch_stats.lines_submitted += len(lines)
        return _ok(body)

    def _retrieve(self, batch_id: str) -> tuple[int, dict[str, str], bytes]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return _missing(f"no batch {batch_id}")
        self.batch_stats.polls += 1
        done = time.monotonic() - batch.created >= batch.behaviour.delay_s
        if done and batch.body["status"] == "in_progress":
            self._finish(batch)
        return _ok(batch.body)

    def _finish(self, batch: _Batch) -> None:
        b, body = batch.behaviour, batch.body
        lines = _lines(self.files[body["input_file_id"]])
        if b.outcome == "failed":
            body["status"] = "failed"
            body["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "injected batch failure"}],
            }
            return
        out: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        if b.outcome in ("expired", "cancelled"):
            ran = int(len(lines) * b.answered_share)
            if not b.omit_unanswered:
                failed += [_not_run(line["custom_id"], b.outcome) for line in lines[ran:]]
            lines = lines[:ran]
        for n, line in enumerate(lines, start=1):
            if b.error_every and n % b.error_every == 0:
                failed.append(_line(line["custom_id"], 400, _error_body("injected line error")))
                continue
            completion = self._completion(line.get("body") or {}, malformed=False)
            out.append(_line(line["custom_id"], 200, completion))
        self.batch_stats.lines_answered += len(out)
        self.batch_stats.lines_failed += len(failed)
        not_run = sum(1 for line in failed if line["response"] is None)
        if b.duplicate_lines:
            out = [line for line in out for _ in range(2)]
        if out:
            body["output_file_id"] = self._store(_jsonl(out))
        if failed:
            body["error_file_id"] = self._store(_jsonl(failed))
        body["status"] = b.outcome
        body["request_counts"] = {
            "total": body["request_counts"]["total"],
            "completed": len(lines) - (len(failed) - not_run),
            "failed": len(failed),
        }


def multipart_fields(body: bytes) -> dict[str, bytes]:
    """name → value of a multipart/form-data body (its first line is the boundary)."""
    boundary = body.split(b"\r\n", 1)[0]
    out: dict[str, bytes] = {}
    for part in body.split(boundary)[1:]:
        if part.startswith(b"--"):
            break  # the closing boundary
        head, _, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        for token in head.decode("latin-1").split(";"):
            key, _, quoted = token.strip().partition("=")
            if key == "name":
                out[quoted.strip('"')] = value.removesuffix(b"\r\n")
    return out


def _lines(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in content.splitlines() if line.strip()]


def _line(custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": f"req_{custom_id}", "body": body},
        "error": None,
    }


def _not_run(custom_id: str, outcome: str) -> dict[str, Any]:
    """The error-file line of a request an expired or cancelled batch never ran (OpenAI's
    BatchRequestOutput with `response: null` and code batch_expired / batch_cancelled)."""
    message = {
        "expired": "This request could not be executed before the completion window expired.",
        "cancelled": "The batch was cancelled before this request was executed.",
    }[outcome]
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": f"batch_{outcome}", "message": message},
    }


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _file_object(file_id: str, content: bytes, purpose: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(content),
        "created_at": int(time.time()),
        "filename": f"{file_id}.jsonl",
        "purpose": purpose,
        "status": "processed",
    }


def _copy(behaviour: BatchBehaviour) -> BatchBehaviour:
    return BatchBehaviour(**{f.name: getattr(behaviour, f.name) for f in fields(behaviour)})


def _error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def _error(message: str) -> bytes:
    return json.dumps(_error_body(message)).encode()


def _ok(body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, json.dumps(body).encode()


def _missing(message: str) -> tuple[int, dict[str, str], bytes]:
    return 404, {}, _error(message)


async def serve(config: ServerConfig, behaviour: BatchBehaviour) -> None:
    server = BatchJudgeServer(config, behaviour)
    url = await server.start()
    print(f"batch judge server listening on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    d, b = ServerConfig(), BatchBehaviour()
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port, help="0 = any free port (printed)")
    p.add_argument("--latency", default=d.latency, help="online calls, as bench.judge_server")
    p.add_argument("--batch-delay", type=float, default=b.delay_s, help="s until a batch ends")
    p.add_argument("--batch-outcome", choices=OUTCOMES, default=b.outcome)
    p.add_argument("--error-every", type=int, default=b.error_every, help="k: every k-th line")
    p.add_argument("--duplicate-lines", action="store_true")
    p.add_argument("--answered-share", type=float, default=b.answered_share)
    p.add_argument(
        "--omit-unanswered",
        action="store_true",
        help="leave an expired/cancelled batch's unrun lines out of its error file",
    )
    args = p.parse_args(argv)
    config = ServerConfig(host=args.host, port=args.port, latency=args.latency)
    behaviour = BatchBehaviour(
        delay_s=args.batch_delay,
        outcome=args.batch_outcome,
        error_every=args.error_every,
        duplicate_lines=args.duplicate_lines,
        answered_share=args.answered_share,
        omit_unanswered=args.omit_unanswered,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, behaviour))


if __name__ == "__main__":
    main()
