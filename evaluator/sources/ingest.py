"""Ingest traces into the store: from Python objects or a JSONL file.

A bad line is reported with its line number and the reason, and does not stop the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from evaluator.store.store import Store
from evaluator.traces.model import (
    MAX_TRACE_BYTES,
    Trace,
    TraceFormatError,
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


def _save(store: Store, batch: list[Trace], report: IngestReport) -> None:
    if not batch:
        return
    result = store.save_traces(batch)
    report.ingested += result.inserted
    report.replaced += result.replaced
    report.trace_ids.extend(t.trace_id for t in batch)
    batch.clear()


def _dedupe_batch(batch: list[Trace], trace: Trace) -> None:
    # The same ID twice in one batch: the later document wins, as it would across batches.
    for i, existing in enumerate(batch):
        if existing.trace_id == trace.trace_id:
            del batch[i]
            break
    batch.append(trace)


def ingest_traces(store: Store, documents: Iterable[dict[str, Any] | Trace]) -> IngestReport:
    """Validate and store trace documents (dicts in the trace format, or Trace objects)."""
    report = IngestReport()
    batch: list[Trace] = []
    for index, doc in enumerate(documents):
        try:
            trace = doc if isinstance(doc, Trace) else parse_trace(doc)
        except TraceFormatError as exc:
            report.errors.append((index, str(exc)))
            continue
        _dedupe_batch(batch, trace)
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
    batch: list[Trace] = []
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
            _dedupe_batch(batch, trace)
            if len(batch) >= BATCH:
                _save(store, batch, report)
    _save(store, batch, report)
    return report
