"""`evaluator health`: is each dependency usable, and if not, what exactly is wrong.

Checks rubrics, the database (read-only: never migrates; says when the schema is behind),
Redis (with its persistence: a Redis that keeps nothing on restart loses queued work, and
the live workers' heartbeats), the judge endpoint (one cheap GET /models with a short
timeout, when a rubric needs it), every alert sink (evaluator.cli.health_sinks: its
configuration, whether it resolves, its last delivery result) and each rubric's judge
against its anchor floor (evaluator.cli.health_anchors: a warning while below it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from evaluator.cli import exit_codes
from evaluator.cli.health_anchors import check_anchors
from evaluator.cli.health_sinks import check_sinks, sink_lines
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import Settings, load_settings
from evaluator.errors import RubricError

JUDGE_TIMEOUT_S = 3.0


def _check_hygiene(settings: Settings, rubrics: Any) -> dict[str, Any]:
    """The worker's start-up judge hygiene check (evaluator.worker.hygiene): warnings only."""
    from evaluator.store.store import Store
    from evaluator.worker.hygiene import RECENT_TRACES, configured_judge_model, self_preference

    try:
        store = Store(settings.database.url, migrate=False)
        try:
            models = store.recent_models(RECENT_TRACES)
        finally:
            store.close()
    except Exception as exc:  # the database check reports why
        return {"ok": True, "checked": False, "why": str(exc).splitlines()[0][:200]}
    found = self_preference(rubrics, configured_judge_model(settings), models)
    out: dict[str, Any] = {"ok": True, "checked": True, "generator_models": len(models)}
    if found:
        out["warnings"] = found
        out["warning"] = "; ".join(f"{name}: {w}" for name, ws in found.items() for w in ws)
    return out


def _check_database(settings: Settings) -> dict[str, Any]:
    from sqlalchemy.exc import SQLAlchemyError

    from evaluator.cli.exit_codes import describe_failure
    from evaluator.store import batches, outbox
    from evaluator.store.store import Store

    try:
        store = Store(settings.database.url, migrate=False)
    except Exception as exc:  # reported, not raised: health lists every problem
        failure = describe_failure(exc, database_url=settings.database.url)
        return {"ok": False, "error": failure.message if failure else repr(exc)}
    try:
        pending = outbox.count_intents(store.engine, outbox.PENDING)
        dead = outbox.count_intents(store.engine, outbox.DEAD)
        try:  # batch mode's waiting judge calls (absent before migration 0008)
            waiting = batches.counts(store.engine)
        except SQLAlchemyError:
            waiting = {}
    finally:
        store.close()
    return {"ok": True, "pending_intents": pending, "dead_intents": dead, **waiting}


async def redis_persistence(redis: Any) -> dict[str, Any]:
    """Whether Redis keeps data across a restart (AOF and/or RDB snapshots). Managed Redis
    often disables CONFIG: then it is unknown, not wrong."""
    try:
        aof = await redis.config_get("appendonly")
        rdb = await redis.config_get("save")
    except Exception as exc:
        return {"persistence": "unknown", "why": str(exc).splitlines()[0]}
    on_aof = aof.get("appendonly") in ("yes", b"yes")
    on_rdb = bool(rdb.get("save"))
    kind = "aof" if on_aof else "rdb snapshots" if on_rdb else "off"
    out: dict[str, Any] = {"persistence": kind}
    if not on_aof:
        out["warning"] = (
            "appendonly is off: queued intake and jobs since the last snapshot are lost if "
            "Redis restarts (CONFIG SET appendonly yes)"
        )
    return out


async def _check_redis(settings: Settings) -> dict[str, Any]:
    from evaluator.config.redis_clients import async_redis
    from evaluator.worker.heartbeat import live_workers

    redis = async_redis(settings, socket_connect_timeout=2, socket_timeout=2)
    try:
        await redis.ping()
        # Each live `evaluator worker` refreshes its own key (evaluator.worker.heartbeat).
        workers = await live_workers(redis, settings.redis.key_prefix, settings.redis.queue_name)
        return {
            "ok": True,
            "workers": len(workers),
            "worker_heartbeats": workers,
            **(await redis_persistence(redis)),
        }
    except Exception as exc:
        cause = str(exc).splitlines()[0]
        if "Error 111" in cause or isinstance(exc.__cause__, ConnectionRefusedError):
            cause = "connection refused (is redis-server running there?)"
        return {"ok": False, "error": f"{settings.redis.url}: {cause}"}
    finally:
        await redis.aclose()


async def _check_judge(
    settings: Settings, needed_by: list[str], cascades: list[str], advisory_note: str
) -> dict[str, Any]:
    """The judge: FAIL when a rubric needs it and none is configured; a warning (still ok)
    when only cascade rubrics would use it (their verdicts are then advisory); else probed."""
    import httpx

    judge = settings.judge
    advisory = {"warning": advisory_note, "advisory_rubrics": cascades}
    if not needed_by and not cascades:
        return {"ok": True, "needed": False}
    if not judge.configured:
        if not needed_by:
            return {"ok": True, "needed": False, **advisory}
        return {
            "ok": False,
            "error": f"rubrics {', '.join(needed_by)} need a judge; set judge.base_url "
            "(EVALUATOR_JUDGE__BASE_URL)",
            **(advisory if cascades else {}),
        }
    url = judge.base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {judge.api_key()}"}
    try:
        async with httpx.AsyncClient(timeout=JUDGE_TIMEOUT_S) as client:
            reply = await client.get(url, headers=headers)
    except httpx.ConnectTimeout:
        return {"ok": False, "error": f"{url}: connection timed out after {JUDGE_TIMEOUT_S}s"}
    except httpx.TimeoutException:
        return {"ok": False, "error": f"{url}: no reply within {JUDGE_TIMEOUT_S}s"}
    except httpx.ConnectError as exc:
        cause = str(exc) or "connection failed"
        if _refused(exc):
            cause = "connection refused (nothing listens there; is the judge server running?)"
        return {"ok": False, "error": f"{url}: {cause}"}
    except httpx.HTTPError as exc:
        return {"ok": False, "error": f"{url}: {type(exc).__name__}: {exc}"}
    if reply.status_code in (401, 403):
        return {
            "ok": False,
            "error": f"{url}: HTTP {reply.status_code}: the judge refused the API key "
            f"(${judge.api_key_env})",
        }
    if reply.status_code >= 500:
        return {"ok": False, "error": f"{url}: HTTP {reply.status_code} from the judge"}
    # 404: some OpenAI-compatible servers have no /models; the server still answered.
    return {"ok": True, "needed": True, "url": url, "http_status": reply.status_code}


def _refused(exc: BaseException) -> bool:
    """httpx wraps the socket error ("All connection attempts failed"): look down the chain."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == 111:
            return True
        if "refused" in str(seen).lower() or "Connect call failed" in str(seen):
            return True
        nested = getattr(seen, "exceptions", None)  # an ExceptionGroup from happy eyeballs
        if nested and any(_refused(e) for e in nested):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def check_health(settings_path: Any) -> dict[str, Any]:
    # Imported here, before the probes: they share one event loop and short timeouts, and an
    # import inside them blocks it (the judge probe's, openai's, took over Redis's 2 s connect
    # timeout under a CPU hog: "Timeout connecting to server" with Redis up).
    from judges.scorers.faithfulness import advisory_note
    from judges.scorers.registry import escalates, needs_judge

    settings = load_settings(settings_path)
    checks: dict[str, Any] = {}
    needed_by: list[str] = []
    cascades: list[str] = []
    try:
        rubrics = load_rubrics(settings.rubrics.path)
        checks["rubrics"] = {"ok": True, "count": len(rubrics.rubrics)}
        needed_by = [r.name for r in rubrics.rubrics if needs_judge(r)]
        cascades = [r.name for r in rubrics.rubrics if escalates(r)]
    except RubricError as exc:
        checks["rubrics"] = {"ok": False, "error": "; ".join(exc.problems)}
    checks["database"] = _check_database(settings)
    if checks["rubrics"]["ok"]:
        checks["judge_hygiene"] = _check_hygiene(settings, rubrics)
        checks["judge_anchors"] = check_anchors(settings, rubrics)

    async def remote() -> tuple[dict[str, Any], dict[str, Any]]:
        return await asyncio.gather(
            _check_redis(settings),
            _check_judge(settings, needed_by, cascades, advisory_note(cascades)),
        )

    checks["redis"], checks["judge"] = asyncio.run(remote())
    checks["alerts"] = check_sinks(settings)
    checks["ok"] = all(c["ok"] for c in checks.values() if isinstance(c, dict))
    return checks


# Keys a check states on lines of their own (or not at all) in the table.
_HIDDEN = {"ok", "error", "warning", "warnings", "worker_heartbeats", "floors", "advisory_rubrics"}


def health_table(checks: dict[str, Any]) -> str:
    lines = []
    for name in (
        "rubrics",
        "database",
        "redis",
        "judge",
        "judge_hygiene",
        "judge_anchors",
        "alerts",
    ):
        if name not in checks:
            continue
        c = checks[name]
        if name == "alerts":
            lines.extend(sink_lines(c))
            continue
        facts = ", ".join(f"{k}={v}" for k, v in c.items() if k not in _HIDDEN)
        state = "ok  " if c["ok"] else "FAIL"
        lines.append(f"{state}  {name:<9} {c.get('error') or facts}")
        if c.get("warning"):
            lines.append(f"      {'':<9} warning: {c['warning']}")
        lines.extend(concurrency_lines(c.get("worker_heartbeats") or []))
    lines.append("healthy" if checks["ok"] else "unhealthy: see FAIL lines")
    return "\n".join(lines)


def concurrency_lines(workers: list[dict[str, Any]]) -> list[str]:
    """One line per live worker: where its adaptive judge concurrency limit stands."""
    out = []
    for w in workers:
        c = w.get("judge_concurrency")
        if isinstance(c, dict):
            cuts = ", ".join(f"{k} {v}" for k, v in (c.get("decreases") or {}).items() if v)
            out.append(
                f"      {'':<9} worker {w.get('id')}: judge concurrency {c.get('limit')}"
                f"/{c.get('maximum')} (in flight {c.get('in_flight')}, waiting "
                f"{c.get('waiting')}, cuts: {cuts or 'none'})"
            )
    return out


def require_workers(checks: dict[str, Any], wanted: int, heartbeat_s: float) -> None:
    """Mark Redis failed when fewer than `wanted` workers have a live heartbeat."""
    redis = checks["redis"]
    if wanted <= 0 or not redis.get("ok") or redis.get("workers", 0) >= wanted:
        return
    redis.update(
        ok=False,
        error=f"{redis.get('workers', 0)} live worker(s), {wanted} required: no heartbeat "
        f"within {3 * heartbeat_s:g} s (is `evaluator worker` up?)",
    )
    checks["ok"] = False


def cmd_health(args: argparse.Namespace) -> int:
    checks = check_health(args.settings)
    require_workers(checks, args.require_worker, load_settings(args.settings).worker.heartbeat_s)
    print(json.dumps(checks, indent=2) if args.json else health_table(checks))
    return exit_codes.OK if checks["ok"] else exit_codes.FAIL


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "health", help="check rubrics, database, Redis and the judge; exit 1 if unhealthy"
    )
    p.add_argument(
        "--require-worker",
        nargs="?",
        type=_count,
        const=1,
        default=0,
        metavar="N",
        help="also require N live workers (default 1): each refreshes its heartbeat every "
        "worker.heartbeat_s, so a dead one is missed within 3x that (for supervisors)",
    )
    p.add_argument("--json", action="store_true", help="JSON for scripts and supervisors")
    p.set_defaults(fn=cmd_health)
