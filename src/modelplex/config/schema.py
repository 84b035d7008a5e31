"""The configuration schema. Parsed strictly: unknown keys and wrong types are errors with a path."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


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
    strategy: Literal["ordered", "weighted", "latency", "least_busy", "cheapest", "headroom"] = "ordered"
    description: str | None = None


class Key(Strict):
    name: str = Field(min_length=1)
    key: SecretStr
    team: str = "default"
    user: str | None = None
    models: list[str] | None = None  # None: every model


class Server(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    admin_key: SecretStr | None = None
    # Secret for the HMAC under which gateway keys are stored. Must be the same on every replica.
    key_hmac_secret: SecretStr | None = None
    reload: bool = True  # watch the config file and reload it on change
    default_deadline_ms: int = Field(600_000, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Config(Strict):
    server: Server = Field(default_factory=Server)
    deployments: list[Deployment] = Field(min_length=1)
    models: list[Model] = Field(min_length=1)
    keys: list[Key] = Field(default_factory=list)
