"""What a provider adapter is: pure translation between canonical types and one wire format.

An adapter builds the upstream HTTP request, parses a response body, parses stream events and maps
an error status + structured body into the error tree. It never does I/O: `modelplex.transport`
sends what the adapter built and hands back what arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import msgspec

from modelplex.config.schema import Deployment
from modelplex.errors import UpstreamError
from modelplex.types import ChatRequest, ChatResponse, Delta, EmbeddingRequest, EmbeddingResponse

Framing = Literal["sse", "aws-eventstream"]


class SSEEvent(msgspec.Struct, gc=False):
    """One server-sent event: `event:` name (None when absent) and its joined `data:` lines."""

    event: str | None
    data: str


class BinaryEvent(msgspec.Struct, gc=False):
    """One AWS event-stream message: its string headers and raw payload."""

    headers: dict[str, str]
    payload: bytes


UpstreamEvent = SSEEvent | BinaryEvent


class Target(msgspec.Struct, kw_only=True, gc=False):
    """A deployment resolved for its adapter once per config load: URL and static headers."""

    deployment: Deployment
    name: str
    provider: str
    model: str
    base_url: str
    headers: dict[str, str]


class UpstreamRequest(msgspec.Struct, kw_only=True, gc=False):
    method: str = "POST"
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool = False


class StreamParser(Protocol):
    def feed(self, event: Any) -> list[Delta]:
        """Translate one upstream event. Raises an UpstreamError for an in-stream error event."""
        ...

    def end(self) -> list[Delta]:
        """The upstream stream ended cleanly at the HTTP level. Return any final deltas, or raise
        UpstreamMalformed when what arrived is not a complete answer (no finish, no terminator)."""
        ...


class Adapter(Protocol):
    name: str
    framing: Framing
    default_base_url: str | None

    def prepare(self, deployment: Deployment) -> Target: ...

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        """Problems with a deployment's settings for this provider: (field, message) pairs."""
        ...

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest: ...

    def chat_response(self, body: bytes, target: Target) -> ChatResponse: ...

    def stream_parser(self, request: ChatRequest, target: Target) -> StreamParser: ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError: ...

    def embeddings_request(self, request: EmbeddingRequest, target: Target) -> UpstreamRequest: ...

    def embeddings_response(self, body: bytes, target: Target) -> EmbeddingResponse: ...
