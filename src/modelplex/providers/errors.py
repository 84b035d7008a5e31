"""Shared pieces of error mapping: the status → class default and the Retry-After headers.

Adapters read their provider's structured error body (code / type fields) and call `build` with
what they found; no adapter matches on message text.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

from modelplex.errors import (
    ContentPolicyViolation,
    ContextLengthExceeded,
    SkippedEvent,
    UpstreamError,
    UpstreamMalformed,
    error_for_status,
)

MAX_RETRY_AFTER_S = 24 * 3600.0


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or HTTP date).

    Garbage, negative or absurd values give None, so the caller falls back to its own backoff.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and 0 <= value <= MAX_RETRY_AFTER_S:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        value = when.timestamp() - (time.time() if now is None else now)
        value = max(value, 0.0)
    if not math.isfinite(value) or value < 0 or value > MAX_RETRY_AFTER_S:
        return None
    return value


def build(
    status: int,
    headers: Mapping[str, str],
    message: str,
    *,
    provider_code: str | None = None,
    context_length: bool = False,
    content_policy: bool = False,
    cls: type[UpstreamError] | None = None,
) -> UpstreamError:
    """An UpstreamError for a status, refined by what the adapter read from the error body."""
    if context_length:
        chosen: type[UpstreamError] = ContextLengthExceeded
    elif content_policy:
        chosen = ContentPolicyViolation
    else:
        chosen = cls or error_for_status(status)
    text = message.strip() or f"HTTP {status}"
    return chosen(
        text[:2000],
        upstream_status=status,
        provider_code=provider_code,
        retry_after=retry_after(headers),
    )


def malformed(what: str, body: bytes | str) -> UpstreamMalformed:
    sample = body[:200] if isinstance(body, str) else body[:200].decode("utf-8", "replace")
    return UpstreamMalformed(f"{what}: {sample!r}")


def skipped(data: bytes | str) -> SkippedEvent:
    """A stream event that does not decode: the stream skips it and counts it."""
    sample = data[:200] if isinstance(data, str) else data[:200].decode("utf-8", "replace")
    return SkippedEvent(f"undecodable stream event: {sample!r}")
