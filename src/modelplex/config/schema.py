"""The configuration schema. Parsed strictly: unknown keys and wrong types are errors with a path."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from modelplex.config.base import Strict
from modelplex.config.limits import Admission, BudgetRule, LimitRule
from modelplex.config.observability import Alerts, Observability
from modelplex.config.requestlog import RequestLog
from modelplex.storage.factory import StorageSettings


class Timeouts(Strict):
    """Per-attempt timeouts in seconds. Every one is also cut to what remains of the deadline."""

    connect: float = Field(5.0, gt=0)
    first_token: float = Field(30.0, gt=0)  # until the first chunk of a stream
    idle: float = Field(30.0, gt=0)  # between chunks of a stream
    total: float = Field(600.0, gt=0)  # one attempt, start to finish


class Price(Strict):
    """Prices per 1M tokens. Unset cached/cache-write/reasoning prices default per the catalog."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)
    reasoning: float | None = Field(None, ge=0)
    currency: str = "USD"


class Capabilities(Strict):
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    tools: bool = True
    json_schema: bool = True
    vision: bool = False
    # May this deployment take an assistant prefill (used to resume a cut stream)?
    prefill: bool = False


class Deployment(Strict):
    name: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)  # the upstream model id
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_version: str | None = None  # Azure OpenAI, Anthropic
    region: str | None = None  # Bedrock
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    price: Price | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    weight: float = Field(1.0, ge=0)
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    max_connections: int = Field(100, gt=0)


class Model(Strict):
    """A public model name, served by a pool of deployments, with an ordered fallback list."""

    name: str = Field(min_length=1)
    deployments: list[str] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    # Tried instead when a request is too long for every deployment of this model (known up front)
    # or a provider answers context_length_exceeded.
    context_window_fallbacks: list[str] = Field(default_factory=list)
    # Tried when a provider refuses the request on content policy; without one, the provider's
    # reason goes back to the caller.
    content_policy_fallbacks: list[str] = Field(default_factory=list)
    strategy: Literal["ordered", "weighted", "latency", "least_busy", "cheapest", "headroom"] = "ordered"
    description: str | None = None


class Retry(Strict):
    """Retries of the same deployment. Failures that may be retried: DESIGN.md §4."""

    max_attempts_per_deployment: int = Field(2, ge=1, le=3)
    backoff_base_ms: float = Field(50.0, gt=0)
    backoff_max_ms: float = Field(1000.0, gt=0)
    # Retries per deployment stay under this share of its requests (plus the floor), so an
    # outage never multiplies load.
    budget_ratio: float = Field(0.2, ge=0, le=1)
    budget_floor: int = Field(3, ge=0)  # retries always allowed per 10 s window


class Breaker(Strict):
    consecutive_failures: int = Field(5, ge=1)
    failure_ratio: float = Field(0.5, gt=0, le=1)
    window_s: float = Field(10.0, gt=0)
    min_requests: int = Field(20, ge=1)  # the ratio applies from this many requests in the window
    open_s: float = Field(5.0, gt=0)  # before the single half-open probe
    max_open_s: float = Field(60.0, gt=0)  # open time doubles per failed probe, up to this


class Hedge(Strict):
    enabled: bool = False
    delay_ms: float | None = Field(None, gt=0)  # None: the first deployment's observed p95 TTFT
    min_delay_ms: float = Field(50.0, ge=0)
    max_extra_fraction: float = Field(0.05, ge=0, le=1)  # extra attempts per request, at most


class Condition(Strict):
    """A numeric test: every bound given must hold."""

    lt: float | None = None
    lte: float | None = None
    gt: float | None = None
    gte: float | None = None
    eq: float | None = None


class When(Strict):
    """Conditions on request features; all must hold. Strings match one of a list."""

    prompt_tokens: Condition | None = None
    prompt_words: Condition | None = None
    max_tokens: Condition | None = None
    tools: bool | None = None
    json_schema: bool | None = None
    vision: bool | None = None
    stream: bool | None = None
    task: str | list[str] | None = None
    tags_any: list[str] | None = None
    tags_all: list[str] | None = None
    team: str | list[str] | None = None
    tier: str | list[str] | None = None
    key: str | list[str] | None = None
    dialect: Literal["openai", "anthropic", "responses"] | None = None


class Rule(Strict):
    name: str | None = None
    when: When
    model: str


class Complexity(Strict):
    """The learned step: a classifier scores the prompt; above the threshold goes premium."""

    cheap: str
    premium: str
    premium_share: float | None = Field(None, gt=0, lt=1)  # calibrate to this share of premium calls
    quality_floor: float | None = Field(None, gt=0, le=1)  # or to keep this share of premium quality
    threshold: float | None = None  # or a raw score threshold
    model_file: str | None = None  # default: the model shipped with modelplex


class Route(Strict):
    """A policy that picks a model per request: `model: <route name>` (e.g. `auto`) invokes it."""

    name: str = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    complexity: Complexity | None = None
    default: str
    baseline: str | None = None  # the model counterfactual cost is computed against
    deadline_ms: int | None = Field(None, gt=0)
    hedge: Hedge | None = None
    retry: Retry | None = None
    continuation: bool = False  # resume a cut stream on a deployment that takes a prefill


class Routing(Strict):
    """Execution defaults for every model and route (a route may override retry and hedge)."""

    retry: Retry = Field(default_factory=Retry)
    breaker: Breaker = Field(default_factory=Breaker)
    hedge: Hedge = Field(default_factory=Hedge)
    continuation: bool = False


class Key(Strict):
    name: str = Field(min_length=1)
    key: SecretStr
    team: str = "default"
    user: str | None = None
    tier: str | None = None  # a label rules can route on
    models: list[str] | None = None  # None: every model and route
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    concurrency: int | None = Field(None, gt=0)


class Server(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    # How the kernel shares cores between busy workers (modelplex/server/sched.py): "auto" asks for
    # throughput scheduling when serving with several workers, "throughput" always, "default" never.
    cpu_scheduling: Literal["auto", "throughput", "default"] = "auto"
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    admin_key: SecretStr | None = None
    # Secret for the HMAC under which gateway keys are stored. Must be the same on every replica.
    key_hmac_secret: SecretStr | None = None
    reload: bool = True  # watch the config file and reload it on change
    default_deadline_ms: int = Field(600_000, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Load shedding, per worker: beyond max_in_flight requests wait in a queue of max_queue for at
    # most queue_timeout_ms; past either bound they get 503 + Retry-After at once.
    max_in_flight: int = Field(1000, gt=0)
    max_queue: int = Field(1000, ge=0)
    queue_timeout_ms: int = Field(2000, ge=0)
    # Graceful shutdown on SIGTERM: readiness fails at once, requests are still served for
    # drain_delay_s (load balancers notice), then in-flight requests and streams get up to
    # drain_deadline_s to finish before the process exits.
    drain_delay_s: float = Field(2.0, ge=0)
    drain_deadline_s: float = Field(30.0, gt=0)


class Metering(Strict):
    """Costs are reported in `currency`; each provider currency converts at its rate (units of
    `currency` per 1 unit of it). modelplex never fetches rates: set your own."""

    currency: str = "EUR"
    exchange_rates: dict[str, str] = Field(default_factory=lambda: {"USD": "0.86"})


class Config(Strict):
    server: Server = Field(default_factory=Server)
    metering: Metering = Field(default_factory=Metering)
    deployments: list[Deployment] = Field(min_length=1)
    models: list[Model] = Field(min_length=1)
    routes: list[Route] = Field(default_factory=list)
    routing: Routing = Field(default_factory=Routing)
    keys: list[Key] = Field(default_factory=list)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    limits: list[LimitRule] = Field(default_factory=list)
    budgets: list[BudgetRule] = Field(default_factory=list)
    admission: Admission = Field(default_factory=Admission)
    observability: Observability = Field(default_factory=Observability)
    alerts: Alerts = Field(default_factory=Alerts)
    request_log: RequestLog = Field(default_factory=RequestLog)
