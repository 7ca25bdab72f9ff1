"""Ingest traces into the store: from Python objects or a JSONL file.

A bad line is reported with its line number, the field and the reason, and does not stop
the rest: documents are checked by `parse_trace` (evaluator.traces.validate) before any
write, and should the database still refuse one, the batch is saved trace by trace so only
that one is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from evaluator.errors import TraceFormatError
from evaluator.store.store import Store, is_input_fault
from evaluator.traces.model import (
    MAX_TRACE_BYTES,
    Trace,
    parse_trace,
    parse_trace_json,
)

BATCH = 500


@dataclass
class IngestReport:
    ingested: int = 0
    replaced: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line or index, reason)
    trace_ids: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)


Batch = dict[str, tuple[int, Trace]]  # trace_id -> (line or index, trace)


def _save(store: Store, batch: Batch, report: IngestReport) -> None:
    if not batch:
        return
    try:
        _count(store.save_traces([t for _, t in batch.values()]), batch, report)
    except Exception as exc:
        if not is_input_fault(exc):
            raise  # the database is away: stop, nothing half-reported
        for trace_id, (where, trace) in batch.items():  # isolate the one it refused
            try:
                _count(store.save_traces([trace]), {trace_id: (where, trace)}, report)
            except Exception as one:
                if not is_input_fault(one):
                    raise
                report.errors.append((where, f"refused by the database: {_first_line(one)}"))
    batch.clear()


def _count(result: Any, saved: Batch, report: IngestReport) -> None:
    report.ingested += result.inserted
    report.replaced += result.replaced
    report.trace_ids.extend(saved)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _dedupe_batch(batch: Batch, where: int, trace: Trace) -> None:
    # The same ID twice in one batch: the later document wins, as it would across batches.
    batch.pop(trace.trace_id, None)
    batch[trace.trace_id] = (where, trace)


def ingest_traces(store: Store, documents: Iterable[dict[str, Any] | Trace]) -> IngestReport:
    """Validate and store trace documents (dicts in the trace format, or Trace objects)."""
    report = IngestReport()
    batch: Batch = {}
    for index, doc in enumerate(documents):
        try:
            # A Trace built in Python is checked like a document: the same rules everywhere.
            trace = parse_trace(doc.model_dump() if isinstance(doc, Trace) else doc)
        except TraceFormatError as exc:
            report.errors.append((index, str(exc)))
            continue
        _dedupe_batch(batch, index, trace)
        if len(batch) >= BATCH:
            _save(store, batch, report)
    _save(store, batch, report)
    return report


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, raw line) with over-long lines yielded as None instead of read whole."""
    number = 0
    while True:
        line = stream.readline(MAX_TRACE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_TRACE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of the huge line
                line = stream.readline(1 << 20)
            yield number, None
            continue
        yield number, line


def ingest_jsonl(store: Store, path: Path) -> IngestReport:
    """One trace per line; blank lines are skipped; errors carry the line number."""
    report = IngestReport()
    batch: Batch = {}
    with path.open("rb") as stream:
        for number, line in _lines(stream):
            if line is None:
                report.errors.append((number, f"line longer than {MAX_TRACE_BYTES} bytes"))
                continue
            if not line.strip():
                continue
            try:
                trace = parse_trace_json(line)
            except TraceFormatError as exc:
                report.errors.append((number, str(exc)))
                continue
            _dedupe_batch(batch, number, trace)
            if len(batch) >= BATCH:
                _save(store, batch, report)
    _save(store, batch, report)
    report.errors.sort()
    return report
