"""What produced a verdict: one definition behind both the judge-reply cache key and the epoch.

A `VerdictIdentity` names everything that can change a verdict and is known before any call:
the scorer and method, the rubric (name, version and a hash of the parts that shape a verdict),
the scorer implementation's version, the judge endpoint, the requested model, temperature and
response format, and hashes of the prompt templates and output schemas.

* `identity.epoch()` is a short stable hash of it: records of one epoch are comparable, and
  trends and regression checks never pool across epochs.
* `identity.cache_key(request)` is the judge-reply cache key: the same identity plus the
  rendered request, so a reply is only reused where the same endpoint, model, prompt, schema
  and rubric would have produced it.

A scorer run is attributed with `attributing(identity)`: the judge client reads the identity
from it to key its cache and counts cache hits, misses and the model the provider reported.

    >>> a = VerdictIdentity(scorer="llm_rubric", method="judge", model="m", endpoint="http://a/v1")
    >>> a.epoch() == VerdictIdentity(scorer="llm_rubric", method="judge", model="m",
    ...                              endpoint="http://a/v1").epoch()
    True
    >>> a.epoch() == replace(a, endpoint="http://b/v1").epoch()
    False
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Bumped when the meaning of a field changes: every epoch (and cache key) changes with it.
IDENTITY_SCHEME = "verdict-identity/1"
LEGACY_EPOCH = "legacy"  # records written before epochs existed
EPOCH_CHARS = 16  # 64 bits: plenty for the few epochs one deployment sees


def digest(value: Any) -> str:
    """sha256 of a canonical JSON rendering (sorted keys; surrogates kept, not refused)."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def endpoint_of(base_url: str) -> str:
    """A base URL without credentials, query or trailing slash; scheme and host lowercased.

    Two spellings of one endpoint give one value; two servers never do."""
    parts = urlsplit(base_url.strip())
    host = (parts.hostname or "").lower()
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if ":" in (parts.hostname or ""):  # IPv6 literal
        host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True, slots=True)
class VerdictIdentity:
    """Everything that can change a verdict, known before the call (see the module doc)."""

    scorer: str = ""
    method: str = ""
    rubric: str = ""
    rubric_version: str = ""
    rubric_hash: str = ""
    implementation: str = ""  # "<scorer module>:<IMPLEMENTATION_VERSION>[+local:<version>]"
    endpoint: str | None = None  # judge base URL (endpoint_of); None: no judge involved
    model: str | None = None  # the model requested, not the one the provider reports
    temperature: float | None = None
    response_format: str | None = None
    prompt_hash: str | None = None
    schema_hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies, ~70 us on every cache key.
        return {name: getattr(self, name) for name in _FIELDS}

    def epoch(self) -> str:
        return _epoch(self)

    def cache_key(self, request: Mapping[str, Any]) -> str:
        """The reply-cache key of one rendered request made under this identity."""
        return digest([IDENTITY_SCHEME, "cache", self.to_json(), dict(request)])

    def for_call(
        self, *, endpoint: str, model: str, temperature: float, response_format: str
    ) -> VerdictIdentity:
        """This identity with the judge settings a call actually uses (`endpoint` already
        normalised by endpoint_of, as JudgeClient.endpoint is)."""
        return replace(
            self,
            endpoint=endpoint,
            model=model,
            temperature=temperature,
            response_format=response_format,
        )

    @property
    def kind(self) -> str:
        """The OpenTelemetry evaluator type: a judge model decides, or code does."""
        return "llm_judge" if self.endpoint is not None else "deterministic"

    @property
    def version(self) -> str:
        return f"{self.rubric_version}+{self.implementation}" if self.implementation else ""


_FIELDS = tuple(f.name for f in fields(VerdictIdentity))


@lru_cache(maxsize=1024)  # one per identity a process sees; every record asks for it
def _epoch(identity: VerdictIdentity) -> str:
    return digest([IDENTITY_SCHEME, "epoch", identity.to_json()])[:EPOCH_CHARS]


@dataclass(slots=True)
class CallLog:
    """What the judge calls of one attributed scorer run did (mutable; shared by the tasks
    a scorer fans out to, which copy the context but not the object)."""

    identity: VerdictIdentity
    hits: int = 0
    misses: int = 0
    reported_models: list[str] = field(default_factory=list)
    # The rubric's `[judge] max_output_tokens`: replaces the schema's estimated reply budget.
    max_output_tokens: int | None = None
    # How the accepted replies were asked for and read (judges.llm.formats): the response
    # format of each ("json_schema" | "json_object" | "prompt"), how many had to be dug out
    # of prose or code fences, and how many were retried after being cut at their budget.
    formats: list[str] = field(default_factory=list)
    extracted: int = 0
    truncated_retries: int = 0

    def reported(self, model: str | None) -> None:
        if model and model not in self.reported_models:
            self.reported_models.append(model)

    def cache_details(self) -> dict[str, Any]:
        """`judge_cache` = hit (every judge reply came from the cache) | miss (none did) |
        partial, with the counts; empty when no judge was asked."""
        if not self.hits and not self.misses:
            return {}
        state = "miss" if not self.hits else "hit" if not self.misses else "partial"
        return {
            "judge_cache": state,
            "judge_cache_hits": self.hits,
            "judge_cache_misses": self.misses,
        }

    def reply_details(self) -> dict[str, Any]:
        """`judge_format` (the response format(s) of the judge's replies, in order of first
        use), `judge_reply_extracted` and `judge_truncated_retries` when not 0; empty when no
        reply came from the judge."""
        out: dict[str, Any] = {}
        if self.formats:
            out["judge_format"] = ",".join(dict.fromkeys(self.formats))
        if self.extracted:
            out["judge_reply_extracted"] = self.extracted
        if self.truncated_retries:
            out["judge_truncated_retries"] = self.truncated_retries
        return out


_CURRENT: ContextVar[CallLog | None] = ContextVar("judges_verdict_identity", default=None)


@contextmanager
def attributing(
    identity: VerdictIdentity, *, max_output_tokens: int | None = None
) -> Iterator[CallLog]:
    """Attribute the judge calls made inside the block to `identity` (and, when given, the
    rubric's reply budget)."""
    log = CallLog(identity, max_output_tokens=max_output_tokens)
    token = _CURRENT.set(log)
    try:
        yield log
    finally:
        _CURRENT.reset(token)


def current() -> CallLog | None:
    return _CURRENT.get()


def provenance_json(identity: VerdictIdentity, reported_model: str | None) -> dict[str, Any]:
    """The record's `provenance` column: the identity, its epoch, and what the provider
    reported (beside the identity, not in it: a change there is itself a drift signal)."""
    return {
        **identity.to_json(),
        "epoch": identity.epoch(),
        "judge_model_reported": reported_model,
    }
