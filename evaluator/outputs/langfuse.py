"""Langfuse as a score sink (its public REST API, basic auth).

    sink = LangfuseScoreSink("https://cloud.langfuse.com", public_key, secret_key)
    await sink.send(records)                     # POST /api/public/scores per record

One NUMERIC score per ok record, linked to the trace and (when the record has a span) the
observation, with the explanation as comment. The score `id` is derived from the record's
identity (trace, span, rubric, version) and Langfuse upserts on it, so sending twice writes
once. Reading traces from Langfuse: evaluator.sources.langfuse.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from evaluator.errors import LangfuseError
from evaluator.sources.langfuse import raise_for_reply
from evaluator.store.models import EvalRecord

log = logging.getLogger("evaluator.outputs.langfuse")

_SCORE_NS = uuid.UUID("6f1c1f3e-8d0a-4b5e-9a51-2f2f7c1e0b11")
MAX_COMMENT = 4000


def score_id(record: EvalRecord) -> str:
    """Stable per record identity, so Langfuse's upsert-on-id makes re-sends harmless."""
    key = "\x1f".join((record.trace_id, record.span_id, record.rubric, record.rubric_version))
    return str(uuid.uuid5(_SCORE_NS, key))


def score_body(record: EvalRecord) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": score_id(record),
        "traceId": record.trace_id,
        "name": record.rubric,
        "value": record.score,
        "dataType": "NUMERIC",
        "comment": (record.explanation or "")[:MAX_COMMENT] or None,
        "metadata": {
            "rubric_version": record.rubric_version,
            "scorer": record.scorer,
            "method": record.method,
            "label": record.label,
            "passed": record.passed,
            "judge_model": record.judge_model,
            "evaluator_record_id": str(record.id),
        },
    }
    if record.span_id:
        body["observationId"] = record.span_id
    return {k: v for k, v in body.items() if v is not None}


class LangfuseScoreSink:
    """Writes ok records as scores; error and skipped records are not scores and stay home."""

    def __init__(
        self,
        base_url: str,
        public_key: str,
        secret_key: str,
        *,
        timeout_s: float = 15.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._url = f"{base_url.rstrip('/')}/api/public/scores"
        self._auth = httpx.BasicAuth(public_key, secret_key)

    async def send(self, records: Iterable[EvalRecord]) -> int:
        """POST one score per ok record; returns how many were written. Raises LangfuseError."""
        sent = 0
        for record in records:
            if record.status != "ok" or record.score is None:
                continue
            try:
                reply = await self._client.post(self._url, json=score_body(record), auth=self._auth)
            except httpx.HTTPError as exc:
                raise LangfuseError(f"POST score: {type(exc).__name__}: {exc}") from exc
            raise_for_reply(reply, f"POST score {record.rubric} for trace {record.trace_id}")
            sent += 1
        return sent

    async def take(self, records: Sequence[EvalRecord], new: Sequence[EvalRecord]) -> None:
        """As a record sink: sends the new records only, and never raises (the record is
        stored; its copy in Langfuse is best effort)."""
        if not new:
            return
        try:
            await self.send(new)
        except Exception as exc:
            log.warning("langfuse: could not send %d scores: %s", len(new), exc)

    async def aclose(self) -> None:
        await self._client.aclose()
