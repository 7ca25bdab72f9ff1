"""Requests per second of `evaluator serve`: a baseline tree's server, this tree's, and this
tree's route table on aiohttp.web (the maintained HTTP server already among the
dependencies), in paired interleaved rounds (issue 27 §5).

    git archive <commit> evaluator judges evalcore | tar -x -C /tmp/base
    python -m bench.web_rps --baseline /tmp/base --pairs 10 --seconds 2

Each side is its own server process on its own SQLite database (60 records of one rubric),
started once; each round loads every side in turn (the order rotating each round) with
`--concurrency` client connections from this process, a new connection per request (the
shipped server answers one request per connection), for `--seconds` per path after a
warm-up. The aiohttp side runs the same `App` (guards, routes, error mapping) in aiohttp's
thread pool, aiohttp doing the framing. Reported per path: requests/s per side (median and
range), the server process's CPU per request (user + system, all threads, /proc), and for
each pair the cost ratio this tree ÷ the other side (seconds per request, and CPU per
request: above 1 this tree costs more), its median and a 95 % distribution-free interval
(order statistics of the ratios); a regression is an interval above 1.05.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATHS = ("/api/rubrics", "/app.js")
SIDES = ("base", "new", "aiohttp")


def _seed(db: Path) -> object:
    from datetime import UTC, datetime, timedelta

    from sqlmodel import Session

    from evaluator.store.models import EvalRecord
    from evaluator.store.store import Store

    store = Store(f"sqlite:///{db}")
    now = datetime.now(UTC)
    with Session(store.engine) as session:
        for i in range(60):
            session.add(
                EvalRecord(
                    trace_id=f"t{i}",
                    rubric="faith",
                    rubric_version="1",
                    scorer="s",
                    status="ok",
                    score=i / 60,
                    passed=i > 20,
                    prompt_version=f"v{i % 2}",
                    created_at=now - timedelta(minutes=i),
                )
            )
        session.commit()
    return store


def serve(side: str, tree: Path, db: Path, port: int) -> None:
    """A server process: `base` and `new` the tree's own server, `aiohttp` this tree's App."""
    sys.path.insert(0, str(tree))
    store = _seed(db)
    from evaluator.web.server import ServerOptions

    options = ServerOptions(max_connections=512)
    if side != "aiohttp":
        from evaluator.web.server import make_server

        server = make_server(store, "127.0.0.1", port, options=options)  # type: ignore[arg-type]
        print("ready", flush=True)
        server.serve_forever()
        return
    _serve_aiohttp(store, options, port)


def _serve_aiohttp(store: object, options: object, port: int) -> None:
    from email.message import Message
    from urllib.parse import parse_qs

    from aiohttp import web

    from evaluator.web.api import Api
    from evaluator.web.framing import SECURITY_HEADERS
    from evaluator.web.http import Request
    from evaluator.web.routes import App, route_table

    app = App(route_table(Api(store)), options)  # type: ignore[arg-type]

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = Message()
        for name, value in request.headers.items():
            headers[name] = value
        ours = Request(
            request.method,
            request.path_qs,
            request.path,
            parse_qs(request.query_string, keep_blank_values=True),
            headers,
            lambda: body,
        )
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, app, ours)
        assert answer is not None
        return web.Response(
            status=answer.status,
            body=answer.data,
            headers={"Content-Type": answer.content_type, **SECURITY_HEADERS, **answer.headers},
        )

    async def run() -> None:
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()  # until terminated

    asyncio.run(run())


async def _load(port: int, path: str, seconds: float, concurrency: int) -> int:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    done = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < stop:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            reply = await reader.read()
            writer.close()
            if not reply.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
                raise RuntimeError(f"{path}: {reply[:200]!r}")
            done += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done


def _cpu_s(pid: int) -> float:
    """User + system CPU of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    pid: int, port: int, path: str, seconds: float, concurrency: int
) -> tuple[float, float]:
    """(requests/s, the server's CPU µs per request) over one load phase."""
    asyncio.run(_load(port, path, 0.3, concurrency))  # warm-up
    started, cpu = time.monotonic(), _cpu_s(pid)
    n = asyncio.run(_load(port, path, seconds, concurrency))
    return n / (time.monotonic() - started), (_cpu_s(pid) - cpu) / n * 1e6


def median_interval(ratios: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """The median and a distribution-free interval for it: order statistics k and n-k+1,
    k the largest with P(Binomial(n, 1/2) < k) <= (1 - level) / 2."""
    r, n = sorted(ratios), len(ratios)
    k = 0
    while k + 1 <= n and sum(math.comb(n, i) for i in range(k + 1)) / 2**n <= (1 - level) / 2:
        k += 1
    lo, hi = (r[k - 1], r[n - k]) if k >= 1 else (r[0], r[-1])
    return statistics.median(r), lo, hi


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", type=Path, required=True, help="a tree with the old evaluator/")
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--serve", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.tree, args.db, args.port)
        return
    tmp = Path(tempfile.mkdtemp(prefix="web_rps_"))
    ports, children = {}, []
    for side in SIDES:
        tree = args.baseline.resolve() if side == "base" else REPO
        ports[side] = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "bench.web_rps",
            "--baseline",
            str(args.baseline),
            "--serve",
            side,
            "--tree",
            str(tree),
            "--db",
            str(tmp / f"{side}.db"),
            "--port",
            str(ports[side]),
        ]
        children.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True))
    try:
        for child in children:  # each says "ready" once it listens
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        got: dict[tuple[str, str], list[float]] = {(s, q): [] for s in SIDES for q in PATHS}
        cpu: dict[tuple[str, str], list[float]] = {(s, q): [] for s in SIDES for q in PATHS}
        pids = dict(zip(SIDES, (c.pid for c in children), strict=True))
        for i in range(args.pairs):
            order = SIDES[i % 3 :] + SIDES[: i % 3]
            for side in order:
                for path in PATHS:
                    r, us = measure(pids[side], ports[side], path, args.seconds, args.concurrency)
                    got[side, path].append(r)
                    cpu[side, path].append(us)
            print(
                f"round {i + 1}: "
                + ", ".join(f"{s} {q} {got[s, q][-1]:.0f}/s" for s in SIDES for q in PATHS),
                file=sys.stderr,
            )
    finally:
        for child in children:
            child.terminate()
            child.wait()
    print(
        f"{args.pairs} rounds, {args.seconds} s per path and side, concurrency "
        f"{args.concurrency}, a new connection per request\n"
    )
    print(
        "| path | side | requests/s median (min–max) | this tree's s/request ÷ this side's "
        "| server CPU µs/request median | this tree's ÷ this side's |\n|---|---|---|---|---|---|"
    )

    def ratio_cell(ours: list[float], theirs: list[float]) -> str:
        m, lo, hi = median_interval([a / b for a, b in zip(ours, theirs, strict=True)])
        return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"

    for path in PATHS:
        for side in SIDES:
            r, us = got[side, path], cpu[side, path]
            spread = f"{statistics.median(r):.0f} ({min(r):.0f}–{max(r):.0f})"
            by_rate = "—" if side == "new" else ratio_cell(r, got["new", path])
            by_cpu = "—" if side == "new" else ratio_cell(cpu["new", path], us)
            print(
                f"| `{path}` | {side} | {spread} | {by_rate} | {statistics.median(us):.0f} "
                f"| {by_cpu} |"
            )


if __name__ == "__main__":
    main()
