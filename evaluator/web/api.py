"""The JSON endpoints of `evaluator serve` as plain methods: query string in, document out.

Every endpoint only reads (rollups are refreshed by the worker's cron, never by a GET).
Query parameters are checked before any query runs: an unknown, repeated, over-long or
malformed one is a `BadRequest` (HTTP 400 with {"error": ...}), never a 500. Errors take
their status from the one exit-code table (evaluator.errors): an unknown rubric is 404 as it
is exit 2 on the command line, a schema behind is 409 (exit 4), an unreachable database 503
(exit 3).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from evaluator.analytics.alerts import alert_to_json, list_alerts
from evaluator.analytics.certification_view import Now, certifications_data
from evaluator.analytics.cost import By, PriceFn, cost_per_pass
from evaluator.analytics.human_feedback import review_queue
from evaluator.analytics.names import require_rubric
from evaluator.analytics.overview import overview
from evaluator.analytics.trends import BY, TrendQuery, rubric_names, trend, worst_traces
from evaluator.config.policy import parse_duration
from evaluator.errors import InputError, http_status_for
from evaluator.store.store import Store, as_utc
from evaluator.traces.validate import MAX_LABEL_CHARS, text_problem

MAX_WORST = 50
MAX_REVIEW = 200


class BadRequest(InputError):
    """A malformed request: HTTP 400 (exit 2 on the command line)."""


def error_answer(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, one-line message) for what an endpoint raised, from the one exit-code
    table (evaluator.errors): usage 400/404, unavailable 503, schema behind 409. None for
    a bug (500, logged)."""
    status = http_status_for(exc)
    if status is not None:
        return status, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    module = type(exc).__module__
    if module.startswith(("sqlalchemy", "redis")) or isinstance(exc, ConnectionError):
        return 503, "the database or Redis is unavailable; try again later"
    return None


def params(qs: dict[str, list[str]], allowed: tuple[str, ...]) -> dict[str, str]:
    """One value per known name, each printable text within a label's width."""
    unknown = sorted(set(qs) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(allowed)}")
    out: dict[str, str] = {}
    for name, values in qs.items():
        if len(values) != 1:
            raise BadRequest(f"query parameter {name!r} given {len(values)} times")
        value = values[0]
        if len(value) > MAX_LABEL_CHARS:
            raise BadRequest(f"query parameter {name!r} is longer than {MAX_LABEL_CHARS}")
        problem = text_problem(value)
        if problem or not value.isprintable():
            raise BadRequest(f"query parameter {name!r} contains a control character")
        out[name] = value
    return out


def _required(p: dict[str, str], name: str) -> str:
    if not p.get(name):
        raise BadRequest(f"missing query parameter {name!r}")
    return p[name]


def _time(p: dict[str, str], name: str) -> datetime:
    raw = _required(p, name)
    try:
        return as_utc(datetime.fromisoformat(raw))
    except ValueError:
        raise BadRequest(f"{name}: not an ISO 8601 time: {raw!r}") from None


def _flag(p: dict[str, str], name: str) -> bool:
    raw = p.get(name, "0").lower()
    if raw not in ("0", "1", "true", "false"):
        raise BadRequest(f"{name} must be 0, 1, true or false, got {raw!r}")
    return raw in ("1", "true")


def _count(p: dict[str, str], name: str, default: int, top: int) -> int:
    raw = p.get(name, str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= top:
        raise BadRequest(f"{name} must be a whole number from 1 to {top}, got {raw!r}")
    return int(raw)


def _no_price(_model: str | None, _tokens_in: int, _tokens_out: int) -> float:
    return 0.0


class Api:
    def __init__(
        self,
        store: Store,
        price: PriceFn = _no_price,
        thresholds: Mapping[str, float] | None = None,
        pricing: Collection[str] | None = None,
        certification_now: Now | None = None,
    ) -> None:
        self.store = store
        # What the worker's routers use today per rubric (stage, epoch, alpha, delta, judge):
        # certifications are shown against it, and a cascade without a judge as advisory.
        self.certification_now = certification_now
        self.price = price  # settings.cost_usd: generator tokens at [pricing]
        # The models [pricing] knows: another model's cost is unknown (null), never $0.
        self.pricing = None if pricing is None else frozenset(pricing)
        self.thresholds = dict(thresholds or {})  # rubric pass thresholds, for the review queue

    def _rubric(self, name: str | None) -> str | None:
        """An unknown rubric is 404 (a typo), not an empty answer; None passes."""
        if name:
            require_rubric(self.store, name, self.thresholds)
        return name or None

    def rubrics(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        params(qs, ())
        return {"rubrics": rubric_names(self.store)}

    def trends(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        p = params(qs, ("rubric", "by", "since", "bucket"))
        try:
            q = TrendQuery.parse(
                _required(p, "rubric"),
                p.get("by", "prompt_version"),
                p.get("since", "7d"),
                p.get("bucket", "1d"),
            )
        except (ValueError, OverflowError) as exc:
            raise BadRequest(str(exc)) from None
        self._rubric(q.rubric)
        return trend(self.store, q, refresh=False)

    def alerts(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        p = params(qs, ("open", "rubric"))
        open_only = _flag(p, "open")
        rows = list_alerts(self.store, open_only=open_only, rubric=self._rubric(p.get("rubric")))
        return {"alerts": [alert_to_json(a) for a in rows]}

    def worst(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        p = params(qs, ("rubric", "by", "key", "start", "end", "k"))
        by = p.get("by", "prompt_version")
        if by not in BY:
            raise BadRequest(f"by must be one of {', '.join(BY)}, got {by!r}")
        start, end = _time(p, "start"), _time(p, "end")
        if end <= start:
            raise BadRequest("end must be after start")
        k = _count(p, "k", 5, MAX_WORST)
        rubric = _required(p, "rubric")
        self._rubric(rubric)
        traces = worst_traces(self.store, rubric, by, p.get("key") or None, start, end, k=k)
        return {"traces": traces}

    def cost(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        """Judge + generator USD per answer that passed all of its rubrics, per label."""
        p = params(qs, ("by", "since"))
        by = p.get("by", "prompt_version")
        if by not in ("prompt_version", "model", "feature", "tenant", "none"):
            raise BadRequest(
                f"by must be prompt_version, model, feature, tenant or none, got {by!r}"
            )
        try:
            window = parse_duration(p.get("since", "7d"))
        except ValueError as exc:
            raise BadRequest(f"since: {exc}") from None
        end = datetime.now(UTC)
        return cost_per_pass(
            self.store,
            self.price,
            end - window,
            end,
            cast(By, by),  # checked above
            pricing=self.pricing,
        )

    def review(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        """`evaluator review next --json`: the traces whose human label would teach most."""
        p = params(qs, ("rubric", "n"))
        n = _count(p, "n", 20, MAX_REVIEW)
        rubric = self._rubric(p.get("rubric"))
        items = review_queue(self.store, self.thresholds, rubric=rubric, n=n)
        return {"queue": [i.to_json() for i in items]}

    def overview(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        params(qs, ())
        return overview(self.store, pricing=self.pricing)

    def certifications(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        """`evaluator certify --json`: the stored certifications of a cascade rubric (all
        rubrics without one), each with its status and guarantee."""
        p = params(qs, ("rubric",))
        return certifications_data(
            self.store, self._rubric(p.get("rubric")), now=self.certification_now
        )
