"""Langfuse as a trace source (its public REST API, basic auth).

    source = LangfuseTraceSource("https://cloud.langfuse.com", public_key, secret_key)
    trace = source.get_trace(trace_id)          # same contract as Store.get_trace

Reading: `GET /api/public/traces/{id}` returns the trace with its observations. Mapping
(`trace_from_langfuse`, pure): GENERATION → a `chat` span (model, usage, parameters,
input/output as messages); RETRIEVER, or a SPAN whose output looks like documents → a
`retrieval` span; TOOL → `execute_tool`; AGENT → `invoke_agent`; others are kept as data.
Level ERROR marks a span `error`. Labels: `prompt.version` from trace metadata, else the
generation's linked Langfuse prompt (`name@version`), else the trace's `version`;
`feature`/`tenant` from metadata; `session.id`, `user.id`, `cost_usd` from the trace.

Writing records back as Langfuse scores is a sink: evaluator.outputs.langfuse.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from evaluator.errors import LangfuseError, TraceFormatError
from evaluator.traces.model import Trace, parse_trace

_DOC_KEYS = ("page_content", "pageContent", "content", "text")
_DOC_LISTS = ("documents", "docs", "contexts", "context", "results")
_PARAMS = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_tokens"}
_KIND = {"TOOL": "execute_tool", "AGENT": "invoke_agent", "EMBEDDING": "embeddings"}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- mapping (pure) -----------------------------------------------------------------------


def _messages(value: Any, role: str) -> list[dict[str, Any]]:
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        value = value["messages"]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return [m if "role" in m else {"role": role, **m} for m in value]
    if isinstance(value, dict) and ("content" in value or "role" in value):
        return [{"role": role, **value}]
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [] if value is None else [{"role": role, "content": str(value)}]


def documents_of(value: Any) -> list[dict[str, Any]] | None:
    """Documents in a retriever's output, or None when it does not look like documents."""
    if isinstance(value, dict):
        found = next((value[k] for k in _DOC_LISTS if isinstance(value.get(k), list)), None)
        if found is None:
            return None
        value = found
    if not isinstance(value, list) or not value:
        return None
    docs = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            docs.append({"id": str(i), "content": item})
            continue
        if not isinstance(item, dict):
            return None
        text = next((item[k] for k in _DOC_KEYS if isinstance(item.get(k), str)), None)
        if text is None:
            return None
        meta = _dict(item.get("metadata"))
        doc_id = item.get("id", meta.get("id", meta.get("source", i)))
        docs.append({"id": str(doc_id), "content": text})
    return docs


def _query(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("query", "question", "input"):
            found = value.get(key)
            if isinstance(found, str):
                return found
    return None


def _usage(obs: dict[str, Any]) -> dict[str, int]:
    details = obs.get("usageDetails") or {}
    usage = obs.get("usage") or {}
    out: dict[str, int] = {}
    for target, keys in (
        ("gen_ai.usage.input_tokens", ("input", "promptTokens", "prompt_tokens")),
        ("gen_ai.usage.output_tokens", ("output", "completionTokens", "completion_tokens")),
    ):
        for source in (details, usage):
            value = next((source[k] for k in keys if isinstance(source.get(k), int)), None)
            if value is not None:
                out[target] = value
                break
    return out


def span_from_observation(obs: dict[str, Any]) -> dict[str, Any]:
    """One Langfuse observation as a span of the trace format."""
    kind = str(obs.get("type", "SPAN")).upper()
    attrs: dict[str, Any] = {"langfuse.observation.type": kind}
    documents = documents_of(obs.get("output")) if kind in ("RETRIEVER", "SPAN") else None
    if kind == "GENERATION":
        attrs["gen_ai.operation.name"] = "chat"
        if obs.get("model"):
            attrs["gen_ai.request.model"] = obs["model"]
        params = obs.get("modelParameters") or {}
        for key, name in _PARAMS.items():
            if isinstance(params.get(key), int | float | str):
                attrs[f"gen_ai.request.{name}"] = params[key]
        attrs |= _usage(obs)
        attrs["gen_ai.input.messages"] = _messages(obs.get("input"), "user")
        if obs.get("output") is not None:
            attrs["gen_ai.output.messages"] = _messages(obs.get("output"), "assistant")
    elif documents is not None:
        attrs["gen_ai.operation.name"] = "retrieval"
        attrs["gen_ai.retrieval.documents"] = documents
        query = _query(obs.get("input"))
        if query is not None:
            attrs["gen_ai.retrieval.query.text"] = query
    elif kind in _KIND:
        attrs["gen_ai.operation.name"] = _KIND[kind]
        if kind == "TOOL":
            attrs["gen_ai.tool.name"] = obs.get("name") or ""
            attrs["gen_ai.tool.call.arguments"] = obs.get("input")
            attrs["gen_ai.tool.call.result"] = obs.get("output")
    else:  # kept as data: a later scorer may read it, nothing here interprets it
        attrs["langfuse.input"] = obs.get("input")
        attrs["langfuse.output"] = obs.get("output")
    level = obs.get("level")
    if level == "ERROR" and obs.get("statusMessage"):
        attrs["error.message"] = obs["statusMessage"]
    return {
        "span_id": str(obs["id"]),
        "parent_span_id": obs.get("parentObservationId"),
        "name": obs.get("name") or kind.lower(),
        "status": "error" if level == "ERROR" else "unset",
        "start_time": obs.get("startTime"),
        "end_time": obs.get("endTime"),
        "attributes": {k: v for k, v in attrs.items() if v is not None},
    }


def _prompt_version(data: dict[str, Any], observations: list[dict[str, Any]]) -> str | None:
    metadata = _dict(data.get("metadata"))
    if metadata.get("prompt.version") is not None:
        return str(metadata["prompt.version"])
    for obs in reversed(observations):
        if obs.get("promptVersion") is not None:
            name = obs.get("promptName")
            return f"{name}@{obs['promptVersion']}" if name else str(obs["promptVersion"])
    return None if data.get("version") is None else str(data["version"])


def trace_from_langfuse(data: dict[str, Any]) -> Trace:
    """A `GET /api/public/traces/{id}` body as a Trace (raises TraceFormatError)."""
    observations = sorted(
        (o for o in data.get("observations") or [] if isinstance(o, dict) and o.get("id")),
        key=lambda o: (o.get("startTime") or "", str(o["id"])),
    )
    spans = [span_from_observation(o) for o in observations]
    if not any(s["attributes"].get("gen_ai.operation.name") == "chat" for s in spans) and (
        data.get("output") is not None
    ):  # a trace logged without a generation: its own input/output is the model call
        synthetic = {
            "id": f"{data['id']}-trace",
            "type": "GENERATION",
            "name": data.get("name"),
            "startTime": data.get("timestamp"),
            "input": data.get("input"),
            "output": data.get("output"),
        }
        spans.append(span_from_observation(synthetic))
    metadata = _dict(data.get("metadata"))
    labels = {
        "prompt.version": _prompt_version(data, observations),
        "feature": metadata.get("feature"),
        "tenant": metadata.get("tenant"),
        "session.id": data.get("sessionId"),
        "user.id": data.get("userId"),
        "cost_usd": data.get("totalCost") or None,
        "langfuse.tags": data.get("tags") or None,
    }
    return parse_trace(
        {
            "trace_id": data.get("id"),
            "attributes": {k: v for k, v in labels.items() if v is not None},
            "spans": spans,
        }
    )


# --- I/O --------------------------------------------------------------------------------------


def raise_for_reply(reply: httpx.Response, what: str) -> None:
    """LangfuseError unless the reply succeeded (401/403: a hint about the key pair)."""
    if reply.is_success:
        return
    hint = " (check the public/secret key pair)" if reply.status_code in (401, 403) else ""
    raise LangfuseError(f"{what}: HTTP {reply.status_code}{hint}: {reply.text[:300]}")


class LangfuseTraceSource:
    """Reads traces by ID; `get_trace` is sync like `Store.get_trace` (run it in a thread)."""

    def __init__(
        self,
        base_url: str,
        public_key: str,
        secret_key: str,
        *,
        timeout_s: float = 15.0,
        client: httpx.Client | None = None,
    ) -> None:
        self._client = client or httpx.Client(timeout=timeout_s)
        self._base = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(public_key, secret_key)

    def get_trace(self, trace_id: str) -> Trace | None:
        """The trace, or None when Langfuse does not know it (yet: ingestion lags)."""
        url = f"{self._base}/api/public/traces/{quote(trace_id, safe='')}"
        try:
            reply = self._client.get(url, auth=self._auth)
        except httpx.HTTPError as exc:
            raise LangfuseError(f"GET trace {trace_id}: {type(exc).__name__}: {exc}") from exc
        if reply.status_code == 404:
            return None
        raise_for_reply(reply, f"GET trace {trace_id}")
        try:
            return trace_from_langfuse(reply.json())
        except (ValueError, TraceFormatError) as exc:
            raise LangfuseError(f"trace {trace_id} from Langfuse is unusable: {exc}") from None

    def close(self) -> None:
        self._client.close()
