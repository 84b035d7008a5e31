"""Scripted behaviour of a simulated model: latency, throughput, usage shape, and faults.

A behaviour comes from the simulator config (per model) and can be refined by the upstream model
name itself: `gpt-sim+ttft_ms=200+script=500,ok` is model `gpt-sim` with those settings. Faults are
chosen per request, either from a script (the n-th request gets the n-th outcome; the last one
repeats) or at random with the configured rates.

Outcomes:
    ok                     a normal answer
    <status>               that HTTP status with the provider's error body (500, 503, 429, 401, ...)
    429:<header>=<value>   429 with a chosen retry header, e.g. 429:retry-after=2, 429:retry-after-ms=300
    context_length         the provider's context-length error
    content_policy         the provider's content-policy error
    reset                  the connection is closed before any response
    silent                 the request is accepted and never answered
    slow:<ms>              the first token comes after <ms> milliseconds
    cut:<n>                a stream is cut (connection closed) after n chunks
    stall:<n>              a stream stops sending after n chunks, connection kept open
    malformed:<n>          a garbage event after n chunks, then the stream goes on
    no_done                a complete stream without its terminator ([DONE] / message_stop)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Latency:
    """Fixed milliseconds, or lognormal from p50/p95."""

    p50_ms: float = 0.0
    p95_ms: float | None = None

    def sample(self, rng: random.Random) -> float:
        if self.p95_ms is None or self.p95_ms <= self.p50_ms or self.p50_ms <= 0:
            return self.p50_ms / 1000.0
        sigma = math.log(self.p95_ms / self.p50_ms) / 1.6448536269514722
        return rng.lognormvariate(math.log(self.p50_ms), sigma) / 1000.0

    @classmethod
    def parse(cls, value: Any) -> Latency:
        if isinstance(value, Latency):
            return value
        if isinstance(value, int | float):
            return cls(float(value))
        if isinstance(value, str):
            return cls(float(value))
        if isinstance(value, dict):
            return cls(float(value.get("p50", 0)), float(value["p95"]) if "p95" in value else None)
        raise ValueError(f"latency must be milliseconds or {{p50, p95}}, not {value!r}")


@dataclass(frozen=True)
class Behaviour:
    ttft_ms: Latency = field(default_factory=lambda: Latency(0.0))
    tokens_per_s: float = 0.0  # 0: every token at once
    output_tokens: int = 12  # length of a normal answer
    cached_input_tokens: int = 0  # usage shape: how much of the prompt was a cache read
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    context_window: int | None = None  # prompts above this many tokens get context_length
    reject_prefill: bool = False  # a trailing assistant message gets a 400
    send_usage: bool = True  # include usage in streams
    echo: bool = False  # answer "echo: <last user text>"
    script: tuple[str, ...] = ()
    rates: tuple[tuple[str, float], ...] = ()  # (outcome, probability)
    retry_after: str | None = None  # Retry-After value sent with every 429
    stall_s: float = 3600.0
    embedding_dim: int = 8

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Behaviour | None = None) -> Behaviour:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"unknown behaviour setting {key!r}")
            values[key] = _coerce(key, value)
        return replace(base or cls(), **values)

    def with_model_name(self, model: str) -> tuple[str, Behaviour]:
        """`name+key=value+...` -> (name, behaviour refined by the settings)."""
        if "+" not in model:
            return model, self
        name, *settings = model.split("+")
        data: dict[str, Any] = {}
        for s in settings:
            key, _, value = s.partition("=")
            data[key] = value
        return name, Behaviour.from_mapping(data, self)


def _coerce(key: str, value: Any) -> Any:
    if key == "ttft_ms":
        return Latency.parse(value)
    if key in ("tokens_per_s", "stall_s"):
        return float(value)
    if key in (
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "embedding_dim",
    ):
        return int(value)
    if key == "context_window":
        return None if value in (None, "", "none") else int(value)
    if key in ("reject_prefill", "send_usage", "echo"):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    if key == "script":
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(i).strip() for i in items if str(i).strip())
    if key == "rates":
        if isinstance(value, str):  # "500:0.2,429:0.05"
            pairs = [p.rsplit(":", 1) for p in value.split(",") if p]
            return tuple((k, float(v)) for k, v in pairs)
        return tuple((str(k), float(v)) for k, v in dict(value).items())
    if key == "retry_after":
        return None if value is None else str(value)
    return value


class Chooser:
    """Picks each request's outcome: the script in order, else the rates, else ok."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._counts: dict[str, int] = {}

    @property
    def rng(self) -> random.Random:
        return self._rng

    def next(self, model: str, behaviour: Behaviour) -> str:
        n = self._counts.get(model, 0)
        self._counts[model] = n + 1
        if behaviour.script:
            return behaviour.script[min(n, len(behaviour.script) - 1)]
        if behaviour.rates:
            x = self._rng.random()
            for outcome, p in behaviour.rates:
                if x < p:
                    return outcome
                x -= p
        return "ok"

    def reset(self) -> None:
        self._counts.clear()


def split_outcome(outcome: str) -> tuple[str, str]:
    kind, _, arg = outcome.partition(":")
    return kind, arg
