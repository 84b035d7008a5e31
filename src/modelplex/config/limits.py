"""Config sections for rate limits and budgets (`limits:`, `budgets:`, `admission:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelplex.config.base import Strict


class LimitRule(Strict):
    """Rate limits for one scope. `name: "*"` gives every key / team / user / model its own."""

    scope: Literal["key", "team", "user", "model"]
    name: str = "*"
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    concurrency: int | None = Field(None, gt=0)


class BudgetRule(Strict):
    """A spend cap in the reporting currency, per period. Soft budgets only alert."""

    scope: Literal["key", "team", "user", "route"]
    name: str = "*"
    period: Literal["day", "month", "total"] = "month"
    amount: float = Field(gt=0)  # reporting currency units, e.g. 50.00 (EUR)
    hard: bool = True


class Admission(Strict):
    """How admission behaves when the shared counter store cannot be reached."""

    # Rate limits fall back to this share of each limit, counted in this process alone.
    local_share: float = Field(0.5, gt=0, le=1)
    # Hard budgets: reject with 503 while the store is unreachable (closed), or admit (open).
    budgets_when_store_down: Literal["closed", "open"] = "closed"
    # Output tokens reserved for a request that sets no max_tokens.
    default_max_output_tokens: int = Field(4096, gt=0)
    # After a store failure, skip the store for this long before trying it again.
    store_retry_s: float = Field(2.0, gt=0)
