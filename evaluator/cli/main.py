"""The `evaluator` command line. `evaluator --help` lists the commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from evaluator.cli import exit_codes
from evaluator.cli.analytics import register as register_analytics
from evaluator.cli.certify import register as register_certify
from evaluator.cli.common import log_level, positive
from evaluator.cli.dataset import register as register_dataset
from evaluator.cli.db import register as register_db
from evaluator.cli.epochs import register as register_epochs
from evaluator.cli.erase import register as register_erase
from evaluator.cli.feedback import register as register_feedback
from evaluator.cli.gate import register as register_gate
from evaluator.cli.ops import register as register_ops
from evaluator.cli.reads import register as register_reads
from evaluator.cli.retention import register as register_retention
from evaluator.config.logs import LogFormatError, configure_logging, resolve_format
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import Settings, load_settings
from evaluator.errors import RubricError, SettingsError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = exit_codes.OK, exit_codes.FAIL, exit_codes.USAGE


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit 2), naming --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(exit_codes.USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.settings)


def cmd_ingest(args: argparse.Namespace) -> int:
    from evaluator.sources.ingest import ingest_jsonl
    from evaluator.store.store import Store

    missing = [p for p in args.files if not p.is_file()]
    if missing:  # before anything is stored: the same mistake as a missing file elsewhere
        raise FileNotFoundError(2, "no such file", str(missing[0]))
    settings = _settings(args)
    store = Store(settings.database.url)
    failed = 0
    summary: list[dict[str, Any]] = []
    for path in args.files:
        report = ingest_jsonl(store, path)
        failed += report.failed
        for line, reason in report.errors:
            print(f"{path}:{line}: {reason}", file=sys.stderr)
        summary.append(
            {
                "file": str(path),
                "ingested": report.ingested,
                "replaced": report.replaced,
                "errors": report.failed,
            }
        )
        if not args.json:
            print(
                f"{path}: {report.ingested} new, {report.replaced} replaced, "
                f"{report.failed} rejected"
            )
    if args.json:
        print(json.dumps({"files": summary}, indent=2))
    store.close()
    return EXIT_FAIL if failed else EXIT_OK


def cmd_enqueue(args: argparse.Namespace) -> int:
    from evaluator.intake.enqueue import TraceEnqueuer

    settings = _settings(args)
    ids = list(args.trace_ids)
    if args.from_file:
        ids += [line.strip() for line in args.from_file.read_text().splitlines() if line.strip()]
    if not ids:
        print("nothing to enqueue: give trace IDs or --from-file", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> tuple[int, bool, Any]:
        enq = TraceEnqueuer(
            settings.redis,
            key_prefix=settings.redis.key_prefix,
            batch_size=settings.intake.batch_size,
            buffer_max=max(len(ids), 1),
        )
        accepted = sum(
            enq.enqueue(
                t,
                error=args.error,
                feedback=args.feedback,
                cost_usd=args.cost_usd,
                latency_ms=args.latency_ms,
            )
            for t in ids
        )
        ok = await enq.flush()
        stats = enq.stats
        await enq.aclose()
        return accepted, ok, stats

    _accepted, ok, stats = asyncio.run(run())
    if not ok:
        where = exit_codes.hide_password(settings.redis.url)
        print(
            f"evaluator enqueue: cannot reach Redis at {where}"
            f": {stats.last_error}; start Redis or fix redis.url (EVALUATOR_REDIS__URL)",
            file=sys.stderr,
        )
        return exit_codes.UNAVAILABLE
    print(f"enqueued {stats.pushed} trace IDs ({stats.rejected} rejected)")
    return EXIT_OK if stats.rejected == 0 else EXIT_FAIL


def cmd_worker(args: argparse.Namespace) -> int:
    from evaluator.worker.app import run_burst
    from evaluator.worker.supervise import serve

    settings = _settings(args)
    load_rubrics(settings.rubrics.path)  # refuse to start on a bad rubric, with the reason
    if args.burst:
        result = asyncio.run(run_burst(settings))
        print(json.dumps(result, indent=2))
        return EXIT_OK
    from evaluator.outputs.webhooks import refuse_unsendable

    refuse_unsendable(settings.alerts, os.environ)  # a sink that can never send: exit 2 now
    asyncio.run(serve(settings))
    return EXIT_OK


def cmd_rubrics_check(args: argparse.Namespace) -> int:
    from evaluator.analytics.alerts import regression_problems
    from evaluator.outputs.webhooks import sink_problems

    directory = args.dir or _settings(args).rubrics.path
    if args.dir is not None and not args.dir.is_dir():  # a missing file, not a bad rubric
        raise FileNotFoundError(2, "no such directory", str(args.dir))
    try:
        found = load_rubrics(directory)
    except RubricError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_FAIL
    alerts = _settings(args).alerts
    problems = [*regression_problems(found.rubrics, alerts), *sink_problems(alerts, os.environ)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_FAIL
    for r in found.rubrics:
        rate = "default" if r.sampling.rate is None else r.sampling.rate
        print(f"ok  {r.name}@{r.version}  scorer={r.scorer} method={r.resolved_method} rate={rate}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from evaluator.cli.demo import run_demo

    return run_demo(settings_path=args.settings, db=args.db, traces=args.traces, keep_going=False)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from evaluator.worker.calibration import CalibrationReport, calibrate, load_labelled, render
    from evaluator.worker.runtime import build_runtime

    settings = _settings(args)
    rubric = load_rubrics(settings.rubrics.path).by_name(args.rubric)
    if rubric is None:
        names = ", ".join(r.name for r in load_rubrics(settings.rubrics.path).rubrics)
        print(
            f"evaluator calibrate: no rubric named {args.rubric!r}; known: {names}", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        cases = load_labelled(args.data, limit=args.limit)
    except (OSError, ValueError) as exc:
        print(f"evaluator calibrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runtime = build_runtime(settings)  # only now: it opens clients that must be closed

    async def run() -> CalibrationReport:
        try:
            return await calibrate(
                runtime, rubric, cases, concurrency=args.concurrency, min_scored=args.min_scored
            )
        finally:
            await runtime.aclose()

    report = asyncio.run(run())
    print(json.dumps(report.to_json(), indent=2) if args.json else render(report))
    # Too few scored cases to say how well the judge agrees: ran, and cannot answer yet.
    return exit_codes.UNDECIDED if report.refused else EXIT_OK


def cmd_convert_ragtruth(args: argparse.Namespace) -> int:
    """Convert line by line into a temporary file beside the output, renamed into place
    only when every line converted: a bad line leaves no partial output behind."""
    from evaluator.errors import InputError
    from evaluator.sources.ragtruth import record_to_traces

    count = 0
    partial = args.output.with_name(f".{args.output.name}.{os.getpid()}.partial")
    try:
        with args.source.open() as src, partial.open("w") as out:
            for i, line in enumerate(src):
                if args.limit is not None and i >= args.limit:
                    break
                try:
                    traces = record_to_traces(json.loads(line), prompt_version=args.prompt_version)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    why = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                    raise InputError(
                        f"{args.source}:{i + 1}: not a RAGTruth QA record ({why}); nothing "
                        f"written to {args.output}"
                    ) from None
                for trace in traces:
                    out.write(json.dumps(trace) + "\n")
                    count += 1
        os.replace(partial, args.output)
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {count} traces to {args.output}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="evaluator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Online evaluation worker for LLM applications: sample traces, score them "
        "with LLM-as-judge rubrics, store eval records linked to the trace.",
        epilog="Settings: packaged settings.toml, then --settings FILE (or EVALUATOR_SETTINGS), "
        "then EVALUATOR_<SECTION>__<KEY> environment variables.\n\n" + exit_codes.EPILOG,
    )
    parser.add_argument(
        "--settings", type=Path, help="settings TOML file (only the keys it changes)"
    )
    parser.add_argument(
        "--log-level",
        type=log_level,
        default="WARNING",
        help="DEBUG, INFO, WARNING (default), ERROR",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text (default) or json: one JSON object per line (or EVALUATOR_LOG__FORMAT)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="store traces from JSONL files (one trace per line)")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(fn=cmd_ingest)

    p = sub.add_parser("enqueue", help="queue trace IDs for evaluation")
    p.add_argument("trace_ids", nargs="*")
    p.add_argument("--from-file", type=Path, help="a file with one trace ID per line")
    p.add_argument(
        "--error", action="store_true", help="the request failed (tail rule: always evaluate)"
    )
    p.add_argument("--feedback", type=float, help="user feedback; negative = bad (tail rule)")
    p.add_argument("--cost-usd", type=float, help="cost of the request (tail rule)")
    p.add_argument("--latency-ms", type=float, help="latency of the request (tail rule)")
    p.set_defaults(fn=cmd_enqueue)

    p = sub.add_parser("worker", help="run the worker (intake + arq jobs)")
    p.add_argument(
        "--burst",
        action="store_true",
        help="drain intake, run queued jobs, then exit (no sweeper or regression cron)",
    )
    p.set_defaults(fn=cmd_worker)

    p = sub.add_parser("rubrics", help="rubric files")
    rsub = p.add_subparsers(dest="rubrics_command", required=True, metavar="ACTION")
    c = rsub.add_parser("check", help="validate rubric TOML files; exit 1 naming file, key and fix")
    c.add_argument("dir", nargs="?", type=Path, help="directory (default: settings rubrics.dir)")
    c.set_defaults(fn=cmd_rubrics_check)

    p = sub.add_parser(
        "demo", help="ingest sample traces, evaluate them end to end, print a summary"
    )
    p.add_argument("--db", help="SQLite file to use (default: settings database.url)")
    p.add_argument("--traces", type=Path, help="JSONL traces to use (default: the packaged sample)")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser(
        "calibrate", help="score labelled data with a rubric; report AUROC, F1, kappa"
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="RAGTruth QA JSONL, or trace JSONL with a boolean ragtruth.hallucinated",
    )
    p.add_argument("--rubric", required=True, help="rubric name (see `evaluator rubrics check`)")
    p.add_argument("--limit", type=positive, help="only the first N labelled answers")
    p.add_argument("--concurrency", type=positive, default=16)
    p.add_argument(
        "--min-scored",
        type=positive,
        default=20,
        help="fewest scored cases for agreement metrics (below it they are withheld, exit 6)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_calibrate)

    p = sub.add_parser("convert-ragtruth", help="turn RAGTruth QA JSONL into trace JSONL")
    p.add_argument("source", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--limit", type=positive, help="only the first N questions")
    p.add_argument("--prompt-version", default="v1")
    p.set_defaults(fn=cmd_convert_ragtruth)
    register_reads(sub)  # scores, stats
    register_analytics(sub)  # trends, alerts, serve
    register_ops(sub)  # retry, health
    register_db(sub)  # db upgrade|current, backfill
    register_gate(sub)  # gate
    register_dataset(sub)  # dataset export
    register_epochs(sub)  # epochs
    register_certify(sub)  # certify
    register_feedback(sub)  # feedback import|agreement, review next
    register_erase(sub)  # erase
    register_retention(sub)  # retention run
    return parser


def _urls(args: argparse.Namespace) -> dict[str, str]:
    """The URLs the failure message names (best effort: settings may be what failed)."""
    try:
        settings = load_settings(args.settings)
    except SettingsError:
        return {}
    return {"database_url": settings.database.url, "redis_url": settings.redis.url}


def _run(args: argparse.Namespace) -> int:
    try:
        default_format = load_settings(args.settings).log.format
    except SettingsError:
        default_format = "text"  # the command itself reports the settings error
    try:
        configure_logging(args.log_level, resolve_format(args.log_format, default=default_format))
    except LogFormatError as exc:
        print(exc, file=sys.stderr)
        return exit_codes.USAGE
    try:
        return int(args.fn(args))
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as exc:  # the one place user-facing failures become one line + a code
        failure = exit_codes.describe_failure(exc, **_urls(args))
        if failure is None:
            raise  # a bug: keep the traceback
        print(f"evaluator {args.command}: {failure.message}", file=sys.stderr)
        return failure.code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _run(build_parser().parse_args(argv))
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler below
        return code
    except BrokenPipeError:
        # `evaluator scores | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again, and stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exit_codes.PIPE
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
