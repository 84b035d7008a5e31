"""What an inbound dialect provides: parse its requests, render answers, streams and errors."""

from __future__ import annotations

from typing import Protocol

import msgspec

from modelplex.context import RequestContext
from modelplex.errors import InvalidRequest, ModelplexError
from modelplex.server.http import Scope
from modelplex.types import ChatRequest, ChatResponse, Delta, Usage


class StreamEncoder(Protocol):
    content_type: bytes

    def start(self) -> bytes:
        """Events sent once the stream commits, before the first delta."""
        ...

    def delta(self, d: Delta) -> bytes: ...

    def end(self, usage: Usage) -> bytes:
        """The closing events of a complete answer."""
        ...

    def error(self, exc: ModelplexError) -> bytes:
        """The event that ends a failed stream: never the dialect's clean end."""
        ...


class Dialect(Protocol):
    name: str

    def credential(self, scope: Scope) -> str | None: ...

    def parse_chat(self, body: bytes) -> ChatRequest: ...

    def render_chat(self, response: ChatResponse, request: ChatRequest, ctx: RequestContext) -> bytes: ...

    def stream_encoder(self, request: ChatRequest, ctx: RequestContext, model: str) -> StreamEncoder: ...

    def render_error(self, exc: ModelplexError) -> tuple[int, bytes]: ...


def decode_error(exc: Exception) -> InvalidRequest:
    """A clear 400 for a body that is not JSON or does not match the dialect's schema."""
    if isinstance(exc, RecursionError):
        return InvalidRequest("The request body is nested too deeply.")
    if isinstance(exc, UnicodeDecodeError):
        return InvalidRequest("The request body is not valid UTF-8.")
    if isinstance(exc, msgspec.ValidationError):
        text = str(exc)
        param = None
        if " - at `$." in text:
            path = text.rsplit(" - at `$.", 1)[1].rstrip("`")
            param = path
        return InvalidRequest(f"Invalid request: {text}", param=param)
    return InvalidRequest(f"The request body is not valid JSON: {exc}")


def bearer(scope: Scope) -> str | None:
    """The gateway key from `Authorization: Bearer …` or `x-api-key`, whichever is present."""
    api_key: str | None = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            raw: str = value.decode("latin-1")
            scheme, _, token = raw.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif key == b"x-api-key":
            api_key = str(value.decode("latin-1")).strip() or None
    return api_key
