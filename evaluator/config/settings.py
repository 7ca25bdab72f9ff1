"""One typed settings object, built once at start-up from TOML + environment.

Precedence (lowest first): the packaged `settings.toml`, the file named by `--settings` or
EVALUATOR_SETTINGS, then EVALUATOR_<SECTION>__<KEY> environment variables. Values from the
environment are parsed as TOML literals when they look like one (numbers, booleans), else
taken as strings. Validation errors name the key and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalcore.redaction_kinds import KINDS
from evaluator.config.judge import GeneratorSettings, JudgeSettings
from evaluator.config.policy import parse_duration, parse_policy
from evaluator.config.two_stage import TwoStageSettings
from evaluator.config.urls import check_url_static
from evaluator.errors import SettingsError, UnsafeURL

ENV_PREFIX = "EVALUATOR_"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = PACKAGE_DIR / "settings.toml"
SHIPPED_RUBRICS_DIR = PACKAGE_DIR / "rubrics"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("evaluator", min_length=1)
    queue_name: str = Field("evaluator:queue", min_length=1)
    # High availability (evaluator.config.redis_clients): with sentinels set, `url` gives only
    # db, user, password and TLS (rediss://) of the master, found through these "host:port".
    sentinels: tuple[str, ...] = ()
    sentinel_master: str = Field("mymaster", min_length=1)
    sentinel_password_env: str = ""

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f'{entry!r}: each sentinel must be "host:port"')
        return v


class RetentionSettings(_Section):
    """Days kept per table; 0 = forever (evaluator.store.retention)."""

    traces_days: int = Field(0, ge=0)
    records_days: int = Field(0, ge=0)
    pending_spans_days: int = Field(0, ge=0)
    intents_days: int = Field(0, ge=0)  # done and dead intents only
    batch_rows: int = Field(5000, ge=1, le=1_000_000)


class DatabaseSettings(_Section):
    url: str = "sqlite:///evaluator.db"
    echo: bool = False
    retention: RetentionSettings = RetentionSettings()

    @field_validator("url")
    @classmethod
    def _sql_scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return v


class WorkerSettingsModel(_Section):
    max_jobs: int = Field(32, ge=1, le=10_000)
    job_timeout_s: int = Field(300, ge=1)
    max_tries: int = Field(5, ge=1, le=100)
    trace_not_found_tries: int = Field(4, ge=1, le=100)
    trace_not_found_delay_s: float = Field(5.0, ge=0)
    intake_batch: int = Field(10_000, ge=1, le=50_000)
    intake_idle_sleep_s: float = Field(0.05, ge=0.001, le=10)
    # Outbox: a pending intent older than job_timeout_s + sweep_grace_s gets its job again;
    # after dead_letter_after runs it is parked as dead (see `evaluator retry`).
    sweep_grace_s: float = Field(60.0, ge=0)
    dead_letter_after: int = Field(10, ge=1, le=1000)
    # On SIGTERM, running jobs get this long to finish before they are cancelled.
    shutdown_grace_s: int = Field(30, ge=0, le=3600)
    # Back-pressure, in traces (a batch job counts its members): the intake and the sweeper
    # create a job only while fewer traces than this are queued (so at most one batch over;
    # 0: no bound); the rest wait in {prefix}:intake:held, each with its pending intent, and
    # every worker's intake loop queues them, oldest first, as soon as there is room.
    max_queue_depth: int = Field(50_000, ge=0)
    # The intake puts up to this many sampled traces in one arq job (a job's Redis commands
    # and bookkeeping are paid once for them); at most max_jobs traces run at once either way.
    traces_per_job: int = Field(8, ge=1, le=1000)
    # A judge outage (refused, 5xx, timeouts) defers evaluations with growing delays; only
    # an intent older than this gets a final `judge_unavailable` error record.
    judge_outage_max_age_s: float = Field(86_400.0, ge=0)
    # Each worker refreshes its own heartbeat key in Redis this often (TTL 3x): `evaluator
    # health --require-worker` counts the live ones (evaluator.worker.heartbeat).
    heartbeat_s: float = Field(10.0, ge=0.05, le=600)
    # A cascade's certifications in force are read again this often per process: a withdrawn
    # one stops deciding traces within this many seconds (evaluator.worker.cascade_routing).
    certifications_ttl_s: float = Field(30.0, ge=0, le=3600)


class IntakeSettings(_Section):
    batch_size: int = Field(500, ge=1, le=100_000)
    linger_ms: float = Field(20, ge=0, le=60_000)
    buffer_max: int = Field(100_000, ge=1)


class SamplingSettings(_Section):
    default_rate: float = Field(0.1, ge=0, le=1)
    always_on_error: bool = True
    always_on_negative_feedback: bool = True
    cost_above_usd: float = Field(0.05, ge=0)
    latency_above_ms: float = Field(15000, ge=0)


class BudgetSettings(_Section):
    """The judge budget (README, Judge budget). All caps 0 = no budget: sampling is the
    fixed rate per rubric exactly as without this table. A rubric's own [budget] table caps
    that rubric; this one caps all rubrics' evaluations together."""

    usd_per_day: float = Field(0.0, ge=0)  # 0 = no daily cap
    calls_per_minute: int = Field(0, ge=0)  # evaluations admitted per minute; 0 = no cap
    # What one evaluation is taken to cost: turns usd_per_day into evaluations per day.
    usd_per_evaluation: float = Field(0.001, gt=0)
    # A new stratum (rubric x feature x tenant x prompt version) is sampled at boost_rate for
    # its first boost_first_traces traces or its first boost_hours hours, whichever is longer.
    boost_rate: float = Field(1.0, ge=0, le=1)
    boost_first_traces: int = Field(200, ge=0)
    boost_hours: float = Field(1.0, ge=0)
    # The base rate never drops below this (unless the rubric's rate is lower).
    min_rate: float = Field(0.01, ge=0, le=1)
    # calls_per_minute caps are cumulative within the UTC day: evaluations so far today
    # <= cap x minutes elapsed today (unspent budget carries forward). false = each minute alone.
    carry: bool = True
    # With carry, one minute still spends at most burst x its calls_per_minute cap, so a
    # morning's surplus cannot land on the judge in one minute; 0 = no per-minute bound.
    burst: float = Field(2.0, ge=0)
    # New strata's expected evaluations take at most this share of a minute's room (their
    # boost lowered to fit); 0 = the boost rate regardless of room.
    boost_share: float = Field(0.5, ge=0, le=1)
    # The cap window (s): rate draws wait for its end and the cap admits them by random key
    # per stratum (never by arrival order); records lag their traces by at most a window.
    window_s: float = Field(60.0, ge=0.1, le=3600)


class RedactionSettings(_Section):
    enabled: bool = True
    kinds: tuple[str, ...] = KINDS

    @field_validator("kinds")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(v) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; allowed: {', '.join(KINDS)}")
        return v


class RubricsSettings(_Section):
    dir: str = ""

    @property
    def path(self) -> Path:
        return Path(self.dir).expanduser() if self.dir else SHIPPED_RUBRICS_DIR


class WebhookSink(_Section):
    """One generic webhook: signed with the HMAC secret unless `signed = false`."""

    # Checked like webhook_urls (scheme, allowlist, internal addresses) at start and at send.
    url: str = Field(min_length=1)
    # false: sent without X-Evaluator-Signature (for a receiver that verifies nothing); true
    # needs the secret named by hmac_secret_env, or the worker refuses to start.
    signed: bool = True


# The write-time clamp of a record's trace time (evaluator.store.models.TRACE_AT_MAX_LAG):
# a longer max_lag could not move a record further back.
MAX_LAG_LIMIT = timedelta(days=2)


class AlertsSettings(_Section):
    """Regression check and alert sinks. URLs are checked here (scheme, allowlist, literal
    internal addresses) and again at send time after resolving the host."""

    enabled: bool = True
    interval_minutes: int = Field(5, ge=1, le=60)
    group_by: tuple[Literal["prompt_version", "model", "feature", "tenant"], ...] = (
        "prompt_version",
        "model",
        "feature",
    )
    cool_down_minutes: float = Field(360, ge=0)
    webhook_urls: tuple[str, ...] = ()  # signed webhooks (as `webhooks` with signed = true)
    webhooks: tuple[WebhookSink, ...] = ()
    slack_webhook_url: str = ""
    hmac_secret_env: str = "EVALUATOR_WEBHOOK_SECRET"
    allowlist: tuple[str, ...] = ("hooks.slack.com",)
    allow_private: bool = False
    timeout_s: float = Field(5.0, gt=0, le=60)
    max_attempts: int = Field(4, ge=1, le=10)
    backoff_s: float = Field(1.0, ge=0, le=60)
    # Default regression policy; a rubric's [regression] table overrides any key.
    policy: dict[str, Any] = Field(default_factory=dict)
    # The regression windows' clock: a record counts at its trace's time clamped into
    # [written - max_lag, written] (a trace older than that counts at written - max_lag).
    max_lag: str = "1h"

    @field_validator("max_lag")
    @classmethod
    def _lag(cls, v: str) -> str:
        lag = parse_duration(v)
        if lag.total_seconds() != int(lag.total_seconds()) or lag > MAX_LAG_LIMIT:
            raise ValueError("must be whole seconds, at most 2d (e.g. 30m, 1h, 1d)")
        return v

    @property
    def max_lag_delta(self) -> timedelta:
        return parse_duration(self.max_lag)

    @property
    def webhook_sinks(self) -> tuple[WebhookSink, ...]:
        """Every generic webhook: `webhook_urls` (signed), then `webhooks`."""
        return (*(WebhookSink(url=u) for u in self.webhook_urls), *self.webhooks)

    @field_validator("interval_minutes")
    @classmethod
    def _divides_hour(cls, v: int) -> int:
        if 60 % v:
            raise ValueError("must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60)")
        return v

    @model_validator(mode="after")
    def _targets(self) -> AlertsSettings:
        slack = [self.slack_webhook_url] if self.slack_webhook_url else []
        for url in (*(w.url for w in self.webhook_sinks), *slack):
            try:
                check_url_static(url, self.allowlist, allow_private=self.allow_private)
            except UnsafeURL as exc:
                raise ValueError(f"webhook URL refused: {exc}") from None
        try:
            parse_policy(self.policy)
        except ValueError as exc:
            raise ValueError(f"alerts.policy: {exc}") from None
        return self


class OtlpSettings(_Section):
    """`evaluator serve` receives OTLP/HTTP spans at POST /v1/traces."""

    prompt_version_attribute: str = Field("prompt.version", min_length=1)
    # A trace is complete when its root span has arrived and nothing came for grace_s, or
    # after orphan_s of silence when the root lives in another service.
    grace_s: float = Field(5.0, ge=0, le=600)
    orphan_s: float = Field(120.0, gt=0)
    sweep_interval_s: float = Field(1.0, gt=0, le=60)
    max_body_mib: int = Field(16, ge=1, le=256)


class ServerSettings(_Section):
    """`evaluator serve`: the page, /api/*, /metrics and POST /v1/traces on one port."""

    # When this environment variable is set, /v1/traces, /api/* and /metrics need
    # `Authorization: Bearer <its value>`; unset = no token (loopback use).
    token_env: str = Field("EVALUATOR_API_TOKEN", min_length=1)
    # Host headers accepted (DNS rebinding). Empty: localhost names only when bound to
    # loopback, any host otherwise (list your names when exposed).
    allowed_hosts: list[str] = Field(default_factory=list)
    read_timeout_s: float = Field(10.0, gt=0, le=300)  # silence on a socket
    request_timeout_s: float = Field(30.0, gt=0, le=600)  # a whole request (slowloris)
    max_connections: int = Field(64, ge=1, le=4096)

    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None


class OtelExportSettings(_Section):
    """Export eval records as gen_ai.evaluation.result events (OTLP/HTTP logs)."""

    endpoint: str = ""  # e.g. http://otel-collector:4318; empty = off
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0)


class LangfuseSettings(_Section):
    base_url: str = ""  # empty = off
    public_key_env: str = "LANGFUSE_PUBLIC_KEY"
    secret_key_env: str = "LANGFUSE_SECRET_KEY"
    # Read traces from Langfuse instead of the service's own table.
    trace_source: bool = False
    # Write ok records back to Langfuse as scores.
    write_scores: bool = False

    def keys(self) -> tuple[str, str]:
        return os.environ.get(self.public_key_env, ""), os.environ.get(self.secret_key_env, "")


class LogSettings(_Section):
    # `evaluator --log-format` overrides it; see evaluator.config.logs.
    format: Literal["text", "json"] = "text"


class Price(_Section):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class Settings(_Section):
    redis: RedisSettings = RedisSettings()
    database: DatabaseSettings = DatabaseSettings()
    judge: JudgeSettings = JudgeSettings()
    generator: GeneratorSettings = GeneratorSettings()
    worker: WorkerSettingsModel = WorkerSettingsModel()
    intake: IntakeSettings = IntakeSettings()
    sampling: SamplingSettings = SamplingSettings()
    budget: BudgetSettings = BudgetSettings()
    two_stage: TwoStageSettings = TwoStageSettings()
    rubrics: RubricsSettings = RubricsSettings()
    redaction: RedactionSettings = RedactionSettings()
    alerts: AlertsSettings = AlertsSettings()
    otlp: OtlpSettings = OtlpSettings()
    server: ServerSettings = ServerSettings()
    otel_export: OtelExportSettings = OtelExportSettings()
    langfuse: LangfuseSettings = LangfuseSettings()
    log: LogSettings = LogSettings()
    pricing: dict[str, Price] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _job_fits_judge(self) -> Settings:
        # A scorer may make a call plus one re-ask in sequence; both must fit in one job.
        needed = 2 * self.judge.worst_case_call_s()
        if self.judge.configured and self.worker.job_timeout_s < needed:
            raise ValueError(
                f"worker.job_timeout_s={self.worker.job_timeout_s} is shorter than the judge's "
                f"worst case ({needed:.0f} s = 2 calls x (judge.timeout_s x (judge.max_retries+1)"
                " + back-off)); raise worker.job_timeout_s or lower judge.timeout_s/max_retries"
            )
        return self

    def cost_usd(self, model: str | None, input_tokens: int, output_tokens: int) -> float:
        price = self.pricing.get(model or "")
        if price is None:
            return 0.0
        return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    """EVALUATOR_JUDGE__BASE_URL=x → {"judge": {"base_url": "x"}}."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw)
    return tree


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"settings file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from None


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"invalid settings ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = err.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict) and got is not None else ""
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against the packaged settings.toml"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def load_settings(
    path: str | Path | None = None, environ: dict[str, str] | os._Environ[str] | None = None
) -> Settings:
    """Build the settings: packaged defaults, then `path` (or $EVALUATOR_SETTINGS), then env."""
    environ = os.environ if environ is None else environ
    data = _read_toml(DEFAULTS_FILE)
    chosen = path or environ.get("EVALUATOR_SETTINGS")
    sources = ["defaults"]
    if chosen:
        data = _deep_merge(data, _read_toml(Path(chosen)))
        sources.append(str(chosen))
    overrides = env_overrides(environ)
    if overrides:
        data = _deep_merge(data, overrides)
        sources.append("environment EVALUATOR_*")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, " + ".join(sources))) from None
