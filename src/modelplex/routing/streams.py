"""Streams: an attempt commits on its first delta; the committed stream runs to its end.

`open_stream` races the plan's candidates through the Executor (execute.py) until one produces a
first delta; before that, every failure falls through invisibly. `CommittedStream` then relays
the deltas. A cut, a stall past the idle timeout or a malformed event after the commit ends it
with StreamInterrupted, unless it can resume on a deployment that takes an assistant prefill
(continuation), so the client still gets the whole answer, once.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from modelplex.context import AttemptRecord, RequestContext
from modelplex.errors import (
    SkippedEvent,
    StreamInterrupted,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamMalformed,
)
from modelplex.providers.base import StreamParser
from modelplex.routing.execute import Executor, Policy, timeouts_for
from modelplex.routing.health import Health
from modelplex.routing.plan import Candidate, Plan
from modelplex.runtime import Runtime
from modelplex.transport import AttemptTimeouts, RawResponse, Transport, UpstreamStream
from modelplex.types import (
    ChatRequest,
    Delta,
    Message,
    Text,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)

MAX_RESUMES = 2  # continuations of one cut stream, at most


@dataclass(slots=True)
class Opened:
    """A stream that has produced its first delta (or ended right away)."""

    stream: UpstreamStream
    parser: StreamParser
    first: list[Delta]
    ended: bool


async def open_stream_attempt(
    transport: Transport, c: Candidate, request: ChatRequest, t: AttemptTimeouts, on_skip: Callable[[], None]
) -> Opened:
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
            try:
                deltas = parser.feed(event)
            except SkippedEvent:
                on_skip()
                continue
            if deltas:
                early.extend(deltas)
                if any(not isinstance(d, UsageDelta) for d in deltas):
                    res.first_seen()
                    return Opened(res, parser, early, ended=False)
        early.extend(parser.end())
        if any(not isinstance(d, UsageDelta) for d in early):
            return Opened(res, parser, early, ended=True)
        raise UpstreamMalformed("the stream ended without any content")
    except BaseException:
        res.close()
        raise


async def open_stream(
    rt: Runtime,
    transport: Transport,
    health: Health,
    ctx: RequestContext,
    plan: Plan,
    policy: Policy,
    request: ChatRequest,
    rng: random.Random,
) -> CommittedStream:
    ex = Executor(rt, transport, health, ctx, plan, policy, rng)

    def skipped() -> None:
        ctx.skipped_events += 1

    async def work(c: Candidate, t: AttemptTimeouts) -> Opened:
        return await open_stream_attempt(transport, c, request, t, skipped)

    def close_loser(opened: Any) -> None:
        opened.stream.close()

    c, record, opened = await ex.race(work, close_loser)
    ex.won(c, record)
    record.ttft_s = time.monotonic() - record.started
    return CommittedStream(opened, c, record, ex, request)


class CommittedStream:
    """The winning attempt's deltas after its first one; resumes by prefill when allowed."""

    def __init__(
        self,
        opened: Opened,
        candidate: Candidate,
        record: AttemptRecord,
        executor: Executor,
        request: ChatRequest,
    ) -> None:
        self._opened = opened
        self.candidate = candidate
        self.record = record
        self._ex = executor
        self._request = request
        self.usage = Usage()
        self._saw_usage = False
        self.text = ""  # what the client has been sent so far, for a continuation prefill
        self.tool_open = False
        self.output_chars = 0
        self.finished = False
        self.truncated: Usage | None = None  # estimated usage of a cut attempt we resumed from
        self.resumes = 0
        self.refused_prefill: set[str] = set()  # deployments that answered a prefill with a 400

    def _track(self, d: Delta) -> Delta:
        if isinstance(d, TextDelta):
            self.text += d.text
            self.output_chars += len(d.text)
        elif isinstance(d, ToolCallDelta):
            self.tool_open = True
            self.output_chars += len(d.arguments) + len(d.name or "")
        elif isinstance(d, UsageDelta):
            self.usage = self.usage.merge(d.usage)
            self._saw_usage = True
        return d

    async def batches(self) -> AsyncIterator[list[Delta]]:
        """The answer's deltas, a list per upstream network read (what can be sent in one write)."""
        opened = self._opened
        yield [self._track(d) for d in opened.first]
        while True:
            try:
                while not opened.ended:
                    events = await opened.stream.batch()
                    if not events:
                        break
                    out: list[Delta] = []
                    for event in events:
                        try:
                            parsed = opened.parser.feed(event)
                        except SkippedEvent:
                            self._ex.ctx.skipped_events += 1
                            continue
                        out.extend(self._track(d) for d in parsed)
                    if out:
                        yield out
                tail = [self._track(d) for d in opened.parser.end()]
                if tail:
                    yield tail
                break
            except UpstreamError as exc:
                resumed = await self._resume(exc)
                if resumed is None:
                    self.record.outcome, self.record.message = exc.code, exc.message
                    raise StreamInterrupted(
                        f"upstream {self.record.deployment} failed mid-stream: {exc.message}", exc
                    ) from None
                opened = resumed
                yield [self._track(d) for d in opened.first]
        self.finished = True
        self.record.outcome = "ok"

    async def deltas(self) -> AsyncIterator[Delta]:
        """The answer's deltas one by one."""
        async for batch in self.batches():
            for d in batch:
                yield d

    async def _resume(self, cause: UpstreamError) -> Opened | None:
        """Continue the answer on a deployment that takes an assistant prefill, or give up."""
        ex = self._ex
        if not ex.policy.continuation or self.tool_open or not self.text or self.resumes >= MAX_RESUMES:
            return None
        self.resumes += 1
        self.record.outcome, self.record.message = cause.code, cause.message
        self.record.ended = time.monotonic()
        self._opened.stream.close()
        self.truncated = Usage(
            input_tokens=ex.plan.features.prompt_tokens, output_tokens=len(self.text) // 4, estimated=True
        )
        prefill = Message(role="assistant", content=[Text(text=self.text)])
        request = _with(self._request, messages=[*self._request.messages, prefill])
        # Another deployment first: the one that just cut is the least likely to finish.
        options = [c for c in ex.plan.candidates if c.endpoint.name != self.candidate.endpoint.name]
        options.append(self.candidate)
        limit = ex.policy.retry.max_attempts_per_deployment
        for c in options:
            name = c.endpoint.name
            if (
                not c.endpoint.deployment.capabilities.prefill
                or name in self.refused_prefill
                or ex.tries.get(name, 0) >= limit
                or not ex.health.available(name, time.time())
            ):
                continue
            ex.tries[name] = ex.tries.get(name, 0) + 1
            t = timeouts_for(c, ex.ctx.deadline, time.monotonic())
            if t is None:
                return None
            record = AttemptRecord(
                deployment=c.endpoint.name,
                provider=c.endpoint.target.provider,
                model=c.model,
                started=time.monotonic(),
            )
            ex.ctx.attempts.append(record)
            try:
                opened = await open_stream_attempt(ex.transport, c, request, t, lambda: None)
            except UpstreamBadRequest as exc:
                # Prefill refused: not the caller's problem; the real error is the original cut.
                self.refused_prefill.add(name)
                record.outcome, record.message, record.ended = exc.code, exc.message, time.monotonic()
                continue
            except UpstreamError as exc:
                record.outcome, record.message, record.ended = exc.code, exc.message, time.monotonic()
                ex.health.failure(c.endpoint.name, exc, time.time())
                continue
            self.candidate, self.record, self._opened = c, record, opened
            self.usage, self._saw_usage = Usage(), False
            ex.ctx.answered_by, ex.ctx.answered_model = c.endpoint, c.model
            ex.ctx.resumed = True
            return opened
        return None

    def close(self) -> None:
        self.record.ended = self.record.ended or time.monotonic()
        if not self.finished and self.record.outcome == "pending":
            self.record.outcome = "cancelled"
        self._opened.stream.close()

    def final_usage(self, request: ChatRequest) -> Usage:
        """The provider's usage (plus any resumed-from attempt), or an estimate marked as such."""
        if self._saw_usage:
            usage = self.usage
        else:
            usage = Usage(
                input_tokens=max(len(request.prompt_text()) // 4, 1),
                output_tokens=max(self.output_chars // 4, 0),
                estimated=True,
            )
        if self.truncated is not None:
            t = self.truncated
            usage = Usage(
                input_tokens=usage.input_tokens + t.input_tokens,
                output_tokens=usage.output_tokens + t.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                estimated=True,
            )
        return usage


def _with(request: ChatRequest, **changes: Any) -> ChatRequest:
    import msgspec

    return msgspec.structs.replace(request, **changes)
