"""One request-log row from a finished RequestContext: flat columns, attempts as a nested list.

Building a row is on the request path (it runs in the sink), so it only reads the context and does
arithmetic; the prompt fingerprint is the one pass over the prompt text. No API key is ever
copied: a caller is its key's name, id, team and user.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable
from typing import Final

import msgspec

from modelplex.context import AttemptRecord, RequestContext
from modelplex.runtime import Runtime

Redactor = Callable[[str, str], str | None]  # (text, "prompt" | "output") -> stored text or None

_MESSAGE_CHARS: Final = 300
# Attempt outcomes that are not the deployment's failure (DESIGN.md §4 "breaker counts it").
_NOT_FAILED: Final = frozenset({"ok", "pending", "cancelled", "hedge_lost"})


class AttemptRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    deployment: str
    provider: str
    model: str
    outcome: str
    start_ms: float  # from the request's start
    elapsed_ms: float
    status: int | None = None  # upstream HTTP status, when there was one
    ttft_ms: float | None = None
    hedge: bool = False
    answer: bool = False  # this attempt's output is the answer
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micro: int | None = None  # what the provider charged for it, reporting currency
    message: str | None = None


class Row(msgspec.Struct, kw_only=True, tag="request"):
    """The columns of `request_log`, in table order (docs/request-log.md)."""

    request_id: str
    ts: float  # wall-clock start, seconds since the epoch
    dialect: str
    operation: str
    key_name: str | None
    key_id: str | None
    team: str | None
    user_id: str | None
    requested_model: str | None  # what the caller asked for (a model or a route)
    route: str | None
    route_reason: str | None
    task: str | None
    model: str | None  # the public model that answered (or that the last attempt served)
    deployment: str | None
    provider: str | None
    status: int
    error_class: str | None
    error_message: str | None
    stream: bool
    aborted: bool
    latency_ms: float
    ttft_ms: float | None
    upstream_ms: float
    overhead_ms: float
    attempt_count: int
    hedged: bool
    failover_ms: float | None  # first failure -> first byte of the answer
    failover_from: str | None  # provider of the first failed attempt
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    usage_estimated: bool
    cost_micro: int | None  # the answer, reporting currency; None: failed or unpriced
    currency: str
    native_cost_micro: int | None  # the answer in the provider's currency
    native_currency: str | None
    waste_micro: int
    counterfactual_micro: int | None
    unpriced: bool
    fingerprint: str | None
    tags: list[str]
    attempts: list[AttemptRow]
    prompt: str | None = None
    output: str | None = None


class Feedback(msgspec.Struct, kw_only=True, tag="feedback"):
    """A caller's score of an answer (POST /v1/feedback); the latest score of a request wins."""

    request_id: str
    score: float
    ts: float
    key_name: str | None = None


Record = Row | Feedback  # what one spool line holds
COLUMNS: Final[tuple[str, ...]] = Row.__struct_fields__
JSON_COLUMNS: Final = frozenset({"tags", "attempts"})
BOOL_COLUMNS: Final = frozenset({"stream", "aborted", "hedged", "usage_estimated", "unpriced"})

_DIGITS_TO_MARK = str.maketrans("0123456789", "##########")


def fingerprint(text: str) -> str:
    """A hash of the prompt with numbers and whitespace normalised: every run of digits becomes
    one `#` and every run of whitespace one space, so the same template with other numbers, dates
    or spacing gets the same fingerprint. Built from str methods (C loops), not regular
    expressions: it runs on the request path, over the whole prompt."""
    normal = " ".join(text.translate(_DIGITS_TO_MARK).split())
    while "##" in normal:
        normal = normal.replace("##", "#")
    return hashlib.blake2b(normal.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_TOKEN = re.compile(r"\b(?:sk|pk|rk|key|tok|ghp|xox[abp])[-_][A-Za-z0-9_-]{8,}|\bAKIA[0-9A-Z]{16}\b")
_DIGITS = re.compile(r"\d[\d -]{7,}\d")


def redact_common(text: str, kind: str) -> str | None:
    """The default redaction: mask e-mail addresses, API-key-like tokens and long digit runs
    (card, phone and account numbers)."""
    text = _TOKEN.sub("[key]", text)
    text = _EMAIL.sub("[email]", text)
    return _DIGITS.sub("[number]", text)


def load_redactor(path: str) -> Redactor:
    """Import "package.module:function" (or "package.module.function")."""
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"request_log.redact: cannot import {path!r}: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"request_log.redact: {path!r} is not callable")
    redactor: Redactor = fn
    return redactor


class RowBuilder:
    """Turns a finished context into a Row. `redact` is None when no text is stored."""

    def __init__(self, currency: Callable[[], str], to_report: Callable[[int, str], int | None],
                 redact: Redactor | None, max_text_chars: int) -> None:
        self._currency = currency
        self._to_report = to_report
        self._redact = redact
        self._max = max_text_chars

    def build(self, rt: Runtime, ctx: RequestContext, end: float) -> Row:
        caller, features, usage, answered = ctx.caller, ctx.features, ctx.usage, ctx.answered_by
        attempts = [self._attempt(rt, ctx, a) for a in ctx.attempts]
        last = ctx.attempts[-1] if ctx.attempts else None
        first_failed = next((a for a in ctx.attempts if a.outcome not in _NOT_FAILED), None)
        error = ctx.error
        prompt_text = features.prompt_text if features is not None else None
        return Row(
            request_id=ctx.request_id,
            ts=ctx.wall_started,
            dialect=ctx.dialect,
            operation=ctx.operation,
            key_name=caller.key_name if caller else None,
            key_id=caller.key_id if caller else None,
            team=caller.team if caller else None,
            user_id=caller.user if caller else None,
            requested_model=ctx.model,
            route=ctx.route,
            route_reason=ctx.route_reason,
            task=features.task if features is not None else None,
            model=ctx.answered_model if answered is not None else (last.model if last else ctx.model),
            deployment=answered.name if answered is not None else (last.deployment if last else None),
            provider=(answered.deployment.provider if answered is not None
                      else (last.provider if last else None)),
            status=ctx.status,
            error_class=error.code if error is not None else ("client_gone" if ctx.aborted else None),
            error_message=error.message[:_MESSAGE_CHARS] if error is not None else None,
            stream=ctx.stream,
            aborted=ctx.aborted,
            latency_ms=round((end - ctx.started) * 1000.0, 3),
            ttft_ms=_ttft_ms(ctx),
            upstream_ms=round(ctx.upstream_s * 1000.0, 3),
            overhead_ms=round(ctx.overhead_ms(end), 3),
            attempt_count=len(ctx.attempts),
            hedged=any(a.hedge for a in ctx.attempts),
            failover_ms=round(ctx.failover_s * 1000.0, 3) if ctx.failover_s is not None else None,
            failover_from=first_failed.provider if first_failed is not None else None,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cached_input_tokens=usage.cached_input_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            usage_estimated=usage.estimated if usage else False,
            cost_micro=ctx.report_cost_micro,
            currency=self._currency(),
            native_cost_micro=ctx.cost_micro,
            native_currency=ctx.cost_currency,
            waste_micro=ctx.waste_micro,
            counterfactual_micro=ctx.counterfactual_micro,
            unpriced=ctx.unpriced,
            fingerprint=fingerprint(prompt_text) if prompt_text else None,
            tags=sorted(ctx.tags),
            attempts=attempts,
            prompt=self._text(prompt_text, "prompt"),
            output=self._text(getattr(ctx, "output_text", None), "output"),
        )

    def _attempt(self, rt: Runtime, ctx: RequestContext, a: AttemptRecord) -> AttemptRow:
        u = a.usage
        answer = (a.outcome == "ok" and ctx.answered_by is not None
                  and a.deployment == ctx.answered_by.name and ctx.error is None)
        cost: int | None = None
        if u is not None:
            endpoint = rt.endpoints.get(a.deployment)
            if endpoint is not None and endpoint.price is not None:
                cost = self._to_report(endpoint.price.cost(u), endpoint.price.currency)
        return AttemptRow(
            deployment=a.deployment,
            provider=a.provider,
            model=a.model,
            outcome=a.outcome,
            start_ms=round((a.started - ctx.started) * 1000.0, 3),
            elapsed_ms=round(a.elapsed_ms, 3),
            status=a.upstream_status,
            ttft_ms=round(a.ttft_s * 1000.0, 3) if a.ttft_s is not None else None,
            hedge=a.hedge,
            answer=answer,
            input_tokens=u.input_tokens if u else 0,
            output_tokens=u.output_tokens if u else 0,
            cached_input_tokens=u.cached_input_tokens if u else 0,
            cache_write_tokens=u.cache_write_tokens if u else 0,
            reasoning_tokens=u.reasoning_tokens if u else 0,
            cost_micro=cost,
            message=a.message[:_MESSAGE_CHARS] if a.message else None,
        )

    def _text(self, text: object, kind: str) -> str | None:
        if self._redact is None or not isinstance(text, str) or not text:
            return None
        out = self._redact(text, kind)
        return out[: self._max] if out is not None else None


def _ttft_ms(ctx: RequestContext) -> float | None:
    """Request start to the answer's first byte: for a stream, the first byte sent to the client;
    otherwise the answering attempt's first upstream byte, when the transport measured it."""
    if ctx.first_byte_at is not None:
        return round((ctx.first_byte_at - ctx.started) * 1000.0, 3)
    answered = ctx.answered_by
    for a in reversed(ctx.attempts):
        if answered is not None and a.deployment == answered.name and a.ttft_s is not None:
            return round((a.started - ctx.started + a.ttft_s) * 1000.0, 3)
    return None
