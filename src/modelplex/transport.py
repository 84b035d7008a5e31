"""The only module that does upstream HTTP: pooled sessions, timeouts, stream framing.

aiohttp's exceptions are translated into the error tree here and nowhere else. Timeouts come in
four phases: connect, first token (until the caller marks the first useful event), idle (between
reads once the first token arrived) and total; the caller cuts each to its deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from modelplex.errors import UpstreamConnectError, UpstreamMalformed, UpstreamTimeout
from modelplex.providers.base import Framing, SSEEvent, UpstreamEvent, UpstreamRequest
from modelplex.providers.eventstream import EventStreamDecoder


@dataclass(frozen=True, slots=True)
class AttemptTimeouts:
    connect: float
    first_token: float
    idle: float
    total: float


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class SSEDecoder:
    """Incremental text/event-stream parser (WHATWG): `data:` lines joined, comments skipped."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A lone \r at the end may be the first half of \r\n: keep it for the next chunk.
            tail = b"\r" if buf.endswith(b"\r") else b""
            if tail:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data or self._event is not None:
                events.append(SSEEvent(self._event, "\n".join(self._data)))
                self._event = None
                self._data = []
            return
        if line[0] == 0x3A:  # ':' comment / keep-alive
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")

    def flush(self) -> list[SSEEvent]:
        """End of body: a last event without its blank line is still delivered."""
        events: list[SSEEvent] = []
        if self._buf:
            self._line(self._buf.rstrip(b"\r"), events)
            self._buf = b""
        self._line(b"", events)
        return events


class FrameDecoder(Protocol):
    """A framing decoder: bytes in, events out; `flush` at the end of the body."""

    def feed(self, chunk: bytes) -> list[Any]: ...

    def flush(self) -> list[Any]: ...


_DECODERS: dict[str, Callable[[], FrameDecoder]] = {"sse": SSEDecoder, "aws-eventstream": EventStreamDecoder}


def _decoder_for(framing: Framing) -> FrameDecoder:
    return _DECODERS[framing]()


class UpstreamStream:
    """An open upstream stream after a 2xx status. Iterate events; mark the first useful one."""

    __slots__ = (
        "_decoder",
        "_eof",
        "_first_deadline",
        "_got_first",
        "_idle",
        "_pending",
        "_resp",
        "_total_deadline",
        "headers",
        "status",
    )

    def __init__(
        self, resp: aiohttp.ClientResponse, framing: Framing, timeouts: AttemptTimeouts, started: float
    ) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self._decoder: FrameDecoder = _decoder_for(framing)
        self._pending: deque[UpstreamEvent] = deque()
        self._eof = False
        self._got_first = False
        self._idle = timeouts.idle
        self._first_deadline = started + timeouts.first_token
        self._total_deadline = started + timeouts.total

    def first_seen(self) -> None:
        """The caller got its first useful event: from now on the idle timeout applies."""
        self._got_first = True

    def __aiter__(self) -> UpstreamStream:
        return self

    async def batch(self) -> list[UpstreamEvent]:
        """Every event decoded from the next network read (at least one), or [] at the end."""
        while not self._pending and not self._eof:
            await self._fill()
        out = list(self._pending)
        self._pending.clear()
        return out

    async def __anext__(self) -> UpstreamEvent:
        while not self._pending:
            if self._eof:
                raise StopAsyncIteration
            await self._fill()
        return self._pending.popleft()

    async def _fill(self) -> None:
        """One network read, decoded into events; the timeout depends on the phase."""
        now = time.monotonic()
        if self._got_first:
            limit, phase = min(self._idle, self._total_deadline - now), "idle"
        else:
            limit, phase = self._first_deadline - now, "first_token"
        if self._total_deadline - now <= limit:
            limit, phase = self._total_deadline - now, "total"
        try:
            async with asyncio.timeout(max(limit, 0.0)):
                chunk = await self._resp.content.readany()
        except TimeoutError:
            raise UpstreamTimeout(f"no data for {limit:.3f}s ({phase})", phase=phase) from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamConnectError(f"stream cut: {exc.__class__.__name__}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamConnectError(f"stream failed: {exc.__class__.__name__}") from None
        if chunk:
            try:
                self._pending.extend(self._decoder.feed(chunk))
            except ValueError as exc:
                raise UpstreamMalformed(f"bad stream framing: {exc}") from None
        else:
            self._eof = True
            self._pending.extend(self._decoder.flush())

    def close(self) -> None:
        # Closing (not releasing) the connection cancels the upstream generation.
        self._resp.close()


class Transport:
    """Pooled HTTP client sessions, one per deployment so each has its own connection limit."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions: dict[tuple[str, int], aiohttp.ClientSession] = {}
        self._clock = clock

    def _session(self, pool: str, limit: int) -> aiohttp.ClientSession:
        key = (pool, limit)
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=limit, limit_per_host=limit, ttl_dns_cache=300, keepalive_timeout=30
            )
            session = aiohttp.ClientSession(
                connector=connector, trust_env=False, skip_auto_headers=("User-Agent",), auto_decompress=True
            )
            self._sessions[key] = session
        return session

    async def request(self, up: UpstreamRequest, t: AttemptTimeouts, pool: str, limit: int) -> RawResponse:
        session = self._session(pool, limit)
        timeout = aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect)
        try:
            async with session.request(
                up.method, up.url, data=up.body, headers=up.headers, timeout=timeout
            ) as resp:
                body = await resp.read()
                return RawResponse(resp.status, resp.headers, body)
        except Exception as exc:
            raise translate(exc, t) from None

    async def open_stream(
        self, up: UpstreamRequest, t: AttemptTimeouts, pool: str, limit: int, framing: Framing
    ) -> UpstreamStream | RawResponse:
        """Send a streaming request. A 2xx gives an open stream; any other status its whole body."""
        session = self._session(pool, limit)
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect)
        try:
            async with asyncio.timeout(min(t.first_token, t.total)):
                resp = await session.request(
                    up.method, up.url, data=up.body, headers=up.headers, timeout=timeout
                )
                if resp.status >= 300:
                    try:
                        return RawResponse(resp.status, resp.headers, await resp.read())
                    finally:
                        resp.release()
        except Exception as exc:
            raise translate(exc, t, phase="first_token") from None
        return UpstreamStream(resp, framing, t, started)

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def translate(exc: BaseException, t: AttemptTimeouts, phase: str = "total") -> Exception:
    """aiohttp / OS exceptions -> the error tree. The one place foreign errors are mapped."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"connect timeout after {t.connect:.3f}s", phase="connect")
    if isinstance(exc, TimeoutError):
        limit = t.first_token if phase == "first_token" else t.total
        return UpstreamTimeout(f"no response within {limit:.3f}s ({phase})", phase=phase)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamConnectError(f"response cut: {exc.__class__.__name__}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamMalformed(f"bad HTTP response: {exc.message}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamConnectError(f"{exc.__class__.__name__}: {exc}"[:300])
    if isinstance(exc, Exception):
        return exc
    raise exc
