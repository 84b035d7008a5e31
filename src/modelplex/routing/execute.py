"""Execution: try the planned candidates in order within one deadline, until one answers.

A non-streaming attempt succeeds when a parsed response arrives. A streaming attempt commits when
its first delta arrives; before that, any failure falls through to the next candidate invisibly.
After commit, a failure ends the client's stream with `StreamInterrupted`, never a clean end.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from modelplex.context import AttemptRecord, RequestContext
from modelplex.errors import (
    AllAttemptsFailed,
    AttemptFailure,
    StreamInterrupted,
    UpstreamError,
    UpstreamMalformed,
)
from modelplex.providers.base import StreamParser
from modelplex.routing.plan import Candidate
from modelplex.transport import AttemptTimeouts, RawResponse, Transport, UpstreamStream
from modelplex.types import (
    ChatRequest,
    ChatResponse,
    Delta,
    EmbeddingRequest,
    EmbeddingResponse,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)

MIN_ATTEMPT_S = 0.01  # an attempt with less time than this left is not started


def timeouts_for(candidate: Candidate, deadline: float, now: float) -> AttemptTimeouts | None:
    remaining = deadline - now
    if remaining < MIN_ATTEMPT_S:
        return None
    t = candidate.endpoint.deployment.timeouts
    return AttemptTimeouts(
        connect=min(t.connect, remaining),
        first_token=min(t.first_token, remaining),
        idle=min(t.idle, remaining),
        total=min(t.total, remaining),
    )


def _start(ctx: RequestContext, c: Candidate, now: float) -> AttemptRecord:
    record = AttemptRecord(
        deployment=c.endpoint.name, provider=c.endpoint.target.provider, model=c.model, started=now
    )
    ctx.attempts.append(record)
    return record


def _failed(record: AttemptRecord, exc: UpstreamError, failures: list[AttemptFailure]) -> None:
    record.ended = time.monotonic()
    record.outcome = exc.code
    record.upstream_status = exc.upstream_status
    record.message = exc.message
    failures.append(
        AttemptFailure(
            deployment=record.deployment, provider=record.provider, error=exc, elapsed_ms=record.elapsed_ms
        )
    )


def _out_of_time(failures: list[AttemptFailure]) -> AllAttemptsFailed:
    return AllAttemptsFailed(
        failures,
        reason="the request deadline passed before an answer"
        if failures
        else "the request deadline passed before any attempt",
    )


async def complete(
    transport: Transport, ctx: RequestContext, candidates: list[Candidate], request: ChatRequest
) -> ChatResponse:
    failures: list[AttemptFailure] = []
    for c in candidates:
        now = time.monotonic()
        t = timeouts_for(c, ctx.deadline, now)
        if t is None:
            raise _out_of_time(failures)
        record = _start(ctx, c, now)
        adapter, target = c.endpoint.adapter, c.endpoint.target
        try:
            up = adapter.chat_request(request, target)
            raw = await transport.request(up, t, c.endpoint.name, target.deployment.max_connections)
            if raw.status >= 300:
                raise adapter.error(raw.status, raw.headers, raw.body)
            response = adapter.chat_response(raw.body, target)
        except UpstreamError as exc:
            _failed(record, exc, failures)
            if not exc.fallback:
                break
            continue
        record.ended = time.monotonic()
        record.outcome = "ok"
        record.upstream_status = raw.status
        record.usage = response.usage
        ctx.upstream_s += record.ended - record.started
        ctx.answered_by = c.endpoint
        ctx.answered_model = c.model
        ctx.usage = response.usage
        return response
    raise AllAttemptsFailed(failures)


async def embed(
    transport: Transport, ctx: RequestContext, candidates: list[Candidate], request: EmbeddingRequest
) -> EmbeddingResponse:
    failures: list[AttemptFailure] = []
    for c in candidates:
        now = time.monotonic()
        t = timeouts_for(c, ctx.deadline, now)
        if t is None:
            raise _out_of_time(failures)
        record = _start(ctx, c, now)
        adapter, target = c.endpoint.adapter, c.endpoint.target
        try:
            up = adapter.embeddings_request(request, target)
            raw = await transport.request(up, t, c.endpoint.name, target.deployment.max_connections)
            if raw.status >= 300:
                raise adapter.error(raw.status, raw.headers, raw.body)
            response = adapter.embeddings_response(raw.body, target)
        except UpstreamError as exc:
            _failed(record, exc, failures)
            if not exc.fallback:
                break
            continue
        record.ended = time.monotonic()
        record.outcome = "ok"
        record.usage = response.usage
        ctx.upstream_s += record.ended - record.started
        ctx.answered_by, ctx.answered_model, ctx.usage = c.endpoint, c.model, response.usage
        return response
    raise AllAttemptsFailed(failures)


@dataclass(slots=True)
class _Opened:
    stream: UpstreamStream
    parser: StreamParser
    first: list[Delta]
    ended: bool


async def _open(transport: Transport, c: Candidate, request: ChatRequest, t: AttemptTimeouts) -> _Opened:
    adapter, target = c.endpoint.adapter, c.endpoint.target
    up = adapter.chat_request(request, target)
    res = await transport.open_stream(
        up, t, c.endpoint.name, target.deployment.max_connections, adapter.framing
    )
    if isinstance(res, RawResponse):
        raise adapter.error(res.status, res.headers, res.body)
    parser = adapter.stream_parser(request, target)
    early: list[Delta] = []  # usage reported before the first token (e.g. Anthropic message_start)
    try:
        async for event in res:
            deltas = parser.feed(event)
            if deltas:
                early.extend(deltas)
                if any(not isinstance(d, UsageDelta) for d in deltas):
                    res.first_seen()
                    return _Opened(res, parser, early, ended=False)
        early.extend(parser.end())
        if any(not isinstance(d, UsageDelta) for d in early):
            return _Opened(res, parser, early, ended=True)
        raise UpstreamMalformed("the stream ended without any content")
    except BaseException:
        res.close()
        raise


async def open_stream(
    transport: Transport, ctx: RequestContext, candidates: list[Candidate], request: ChatRequest
) -> CommittedStream:
    failures: list[AttemptFailure] = []
    for c in candidates:
        now = time.monotonic()
        t = timeouts_for(c, ctx.deadline, now)
        if t is None:
            raise _out_of_time(failures)
        record = _start(ctx, c, now)
        try:
            opened = await _open(transport, c, request, t)
        except UpstreamError as exc:
            _failed(record, exc, failures)
            if not exc.fallback:
                break
            continue
        committed = time.monotonic()
        record.ttft_s = committed - record.started
        ctx.upstream_s += record.ttft_s
        ctx.answered_by, ctx.answered_model = c.endpoint, c.model
        return CommittedStream(opened, record, ctx)
    raise AllAttemptsFailed(failures)


class CommittedStream:
    """The deltas of the attempt that won, after its first one. Tracks usage as it passes."""

    def __init__(self, opened: _Opened, record: AttemptRecord, ctx: RequestContext) -> None:
        self._opened = opened
        self.record = record
        self._ctx = ctx
        self.usage = Usage()
        self._saw_usage = False
        self.output_chars = 0
        self.finished = False

    def _track(self, d: Delta) -> Delta:
        if isinstance(d, TextDelta):
            self.output_chars += len(d.text)
        elif isinstance(d, ToolCallDelta):
            self.output_chars += len(d.arguments) + len(d.name or "")
        elif isinstance(d, UsageDelta):
            self.usage = self.usage.merge(d.usage)
            self._saw_usage = True
        return d

    async def deltas(self) -> AsyncIterator[Delta]:
        opened = self._opened
        for d in opened.first:
            yield self._track(d)
        try:
            if not opened.ended:
                async for event in opened.stream:
                    for d in opened.parser.feed(event):
                        yield self._track(d)
                for d in opened.parser.end():
                    yield self._track(d)
        except UpstreamError as exc:
            self.record.outcome = exc.code
            self.record.message = exc.message
            raise StreamInterrupted(
                f"upstream {self.record.deployment} failed mid-stream: {exc.message}", exc
            ) from None
        self.finished = True
        self.record.outcome = "ok"

    def close(self) -> None:
        self.record.ended = time.monotonic()
        if not self.finished and self.record.outcome == "pending":
            self.record.outcome = "cancelled"
        self._opened.stream.close()

    def final_usage(self, request: ChatRequest) -> Usage:
        """The provider's usage, or an estimate (~4 characters a token) marked as such."""
        if self._saw_usage:
            return self.usage
        return Usage(
            input_tokens=max(len(request.prompt_text()) // 4, 1),
            output_tokens=max(self.output_chars // 4, 0),
            estimated=True,
        )
