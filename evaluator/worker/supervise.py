"""Keep a worker process serving while Redis or the database comes and goes.

arq's `Worker.run()` ends the process on the first Redis error of its poll loop (and
start-up fails while the database is down). `serve()` runs one arq Worker at a time: when it
stops on an infrastructure error, running jobs finish, the worker is closed as far as the
dead connections allow, and a new one connects after a jittered back-off. SIGTERM/SIGINT
stop it for good (running jobs get `worker.shutdown_grace_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from arq import Worker

from evaluator.config.settings import Settings
from evaluator.worker.app import make_worker
from evaluator.worker.faults import is_infrastructure
from judges.llm.backoff import Backoff

log = logging.getLogger("evaluator.worker.supervise")


async def _close(worker: Worker) -> None:
    try:
        await worker.close()
    except Exception as exc:  # Redis gone: close what can be closed without it
        log.debug("worker close incomplete (%r); closing the runtime directly", exc)
        # Every running job ends before its runtime closes: a plain gather returns at the
        # first job that failed (as some do when Redis is gone) and leaves the others
        # running on a closed runtime (they re-armed its metrics flusher, seen in logs).
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        if worker.on_shutdown is not None:
            with contextlib.suppress(Exception):
                await worker.on_shutdown(worker.ctx)
        pool = worker.ctx.get("redis")
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close(close_connection_pool=True)


async def serve(settings: Settings) -> None:
    """Run workers until a signal; reconnect after Redis or database failures, never exit."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    current: list[Worker] = []

    def on_signal(signum: signal.Signals) -> None:
        stop.set()
        if current and current[0].main_task is not None and not current[0].main_task.done():
            current[0].handle_sig_wait_for_completion(signum)

    backoff = Backoff(base=0.5, cap=30.0)
    while not stop.is_set():
        worker = make_worker(settings, freeze_gc=True)
        for sig in (signal.SIGINT, signal.SIGTERM):  # replaces arq's own handlers
            loop.add_signal_handler(sig, on_signal, sig)
        current[:] = [worker]
        worker.main_task = asyncio.ensure_future(worker.main())
        failure: BaseException | None = None
        try:
            await worker.main_task
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            failure = exc
        finally:
            await _close(worker)
        if failure is None:
            return
        delay = backoff.next()
        log.warning("worker: lost a dependency (%r); reconnecting in %.1f s", failure, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
