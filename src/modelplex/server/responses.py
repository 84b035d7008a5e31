"""The OpenAI Responses dialect inbound: stateless `POST /v1/responses` requests to canonical ones.

Anything that needs stored state (`previous_response_id`, conversations, background runs) or an
OpenAI-hosted tool is refused with a 400 naming the parameter. Answers and event streams are
rendered in `responses_render.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from modelplex.context import RequestContext
from modelplex.errors import InvalidRequest, ModelplexError
from modelplex.server import openai
from modelplex.server.dialect import bearer, decode_error
from modelplex.server.http import Scope
from modelplex.server.responses_render import ResponsesStreamEncoder, render_chat
from modelplex.types import (
    ChatRequest,
    ChatResponse,
    Image,
    Message,
    Part,
    ResponseFormat,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)

# --- request wire schema ---------------------------------------------------------------------


class _InputText(msgspec.Struct, tag="input_text", tag_field="type"):
    text: str


class _OutputText(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str


class _Refusal(msgspec.Struct, tag="refusal", tag_field="type"):
    refusal: str


class _InputImage(msgspec.Struct, tag="input_image", tag_field="type"):
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class _InputFile(msgspec.Struct, tag="input_file", tag_field="type"):
    filename: str | None = None


_Content = _InputText | _OutputText | _Refusal | _InputImage | _InputFile


class _MessageItem(msgspec.Struct):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[_Content]


class _FunctionCallItem(msgspec.Struct):
    call_id: Annotated[str, Meta(min_length=1)]
    name: Annotated[str, Meta(min_length=1)]
    arguments: str


class _FunctionCallOutputItem(msgspec.Struct):
    call_id: Annotated[str, Meta(min_length=1)]
    output: str | list[_Content]


class _FunctionTool(msgspec.Struct):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class _ToolChoiceFunction(msgspec.Struct):
    name: Annotated[str, Meta(min_length=1)]


class _Format(msgspec.Struct):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class _TextConfig(msgspec.Struct):
    format: _Format | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class _Reasoning(msgspec.Struct):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


_ChoiceMode = Literal["auto", "none", "required"]


class _Request(msgspec.Struct):
    model: Annotated[str, Meta(min_length=1)]
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: _ChoiceMode | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: _TextConfig | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    # Forwarded to OpenAI-dialect deployments under their Chat Completions names.
    reasoning: _Reasoning | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # Accepted without effect: nothing is stored, obfuscated, or produced by a built-in tool.
    store: bool | None = None
    include: list[str] | None = None
    stream_options: dict[str, Any] | None = None
    max_tool_calls: int | None = None
    truncation: Literal["auto", "disabled"] | None = None


_STATELESS = (
    "modelplex is stateless: it stores no responses, conversations or items. "
    "Send the whole conversation in `input` instead."
)
_OPENAI_ONLY = "it is an option of OpenAI's own service."

# Parameters refused whenever set to anything but null/false, and why.
_REFUSED: dict[str, str] = {
    "previous_response_id": _STATELESS,
    "conversation": _STATELESS,
    "context_management": "server-side compaction needs stored state. " + _STATELESS,
    "background": "background responses need stored state, and modelplex is stateless. Use `stream`.",
    "background_options": "background responses need stored state, and modelplex is stateless.",
    "prompt": "stored prompt templates live at OpenAI; send the prompt in `instructions` and `input`.",
    "top_logprobs": "log probabilities are not returned on /v1/responses; use /v1/chat/completions.",
    "moderation": _OPENAI_ONLY,
    "access_programs": _OPENAI_ONLY,
    "image": _OPENAI_ONLY,
    "prompt_cache_options": _OPENAI_ONLY,
    "prompt_cache_retention": _OPENAI_ONLY,
}
_KNOWN = frozenset(_Request.__struct_fields__) | frozenset(_REFUSED)
_decode_any = msgspec.json.Decoder()
T = TypeVar("T")


def _convert(raw: Any, kind: type[T], path: str) -> T:
    """msgspec.convert, with the error's location given from the request's root."""
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        message, _, rest = str(exc).rpartition(" - at `$")
        where = path + rest.rstrip("`") if message else path
        raise InvalidRequest(f"Invalid request: {message or exc} - at `{where}`", param=where) from None


def _admit(raw: dict[str, Any]) -> None:
    """Refuse unknown, missing and unsupported parameters, each by name, before decoding."""
    for key in raw:
        if key not in _KNOWN:
            raise InvalidRequest(f"Unknown parameter: '{key}'.", param=key)
    for key in ("model", "input"):
        if raw.get(key) is None:
            raise InvalidRequest(f"`{key}` is required.", param=key)
    for key, why in _REFUSED.items():
        if raw.get(key) not in (None, False):
            raise InvalidRequest(f"`{key}` is not supported: {why}", param=key)
    if raw.get("truncation") == "auto":
        raise InvalidRequest(
            "`truncation: auto` is not supported: modelplex never drops input to fit a context window.",
            param="truncation",
        )


# --- input items -------------------------------------------------------------------------------


def _image(part: _InputImage, path: str) -> Image:
    if not part.image_url:
        raise InvalidRequest(
            f"{path}: input_image needs image_url (an http(s) or data: URL); file_id refers to "
            "OpenAI's Files API, which modelplex does not serve.",
            param=f"{path}.image_url",
        )
    url = part.image_url
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        return Image(data=data, media_type=header.split(";", 1)[0] or None, detail=part.detail)
    return Image(url=url, detail=part.detail)


def _content(content: str | list[_Content], path: str) -> list[Text | Image]:
    if isinstance(content, str):
        return [Text(text=content)]
    out: list[Text | Image] = []
    for j, p in enumerate(content):
        if isinstance(p, _InputText | _OutputText):
            out.append(Text(text=p.text))
        elif isinstance(p, _Refusal):
            out.append(Text(text=p.refusal))
        elif isinstance(p, _InputImage):
            out.append(_image(p, f"{path}[{j}]"))
        else:
            raise InvalidRequest(
                f"{path}[{j}]: input_file is not supported; send the document's text as input_text.",
                param=f"{path}[{j}].type",
            )
    return out


def _append(out: list[Message], message: Message) -> None:
    """Consecutive assistant turns (text, then each function_call item) are one canonical turn:
    OpenAI wants every tool call of a turn in one message, Anthropic strictly alternating roles."""
    if message.role == "assistant" and out and out[-1].role == "assistant":
        out[-1].content.extend(message.content)
    else:
        out.append(message)


def _item(out: list[Message], raw: dict[str, Any], path: str) -> None:
    kind = raw.get("type", "message")
    if kind == "message":
        m = _convert(raw, _MessageItem, path)
        parts: list[Part] = list(_content(m.content, f"{path}.content"))
        _append(out, Message(role=m.role, content=parts))
    elif kind == "function_call":
        c = _convert(raw, _FunctionCallItem, path)
        _append(
            out,
            Message(role="assistant", content=[ToolCall(id=c.call_id, name=c.name, arguments=c.arguments)]),
        )
    elif kind == "function_call_output":
        o = _convert(raw, _FunctionCallOutputItem, path)
        result = ToolResult(tool_call_id=o.call_id, content=_content(o.output, f"{path}.output"))
        out.append(Message(role="tool", content=[result]))
    elif kind == "reasoning":
        pass  # a model's own reasoning: no other provider can take it back, and none is produced here
    elif kind == "item_reference":
        raise InvalidRequest(f"{path}: item_reference is not supported. {_STATELESS}", param=f"{path}.type")
    else:
        raise InvalidRequest(
            f"{path}: input items of type {kind!r} are not supported; modelplex takes message, "
            "function_call, function_call_output and reasoning items (built-in tools are not served).",
            param=f"{path}.type",
        )


def _messages(wire: _Request) -> list[Message]:
    out: list[Message] = []
    if wire.instructions:
        out.append(Message(role="system", content=[Text(text=wire.instructions)]))
    if isinstance(wire.input, str):
        out.append(Message(role="user", content=[Text(text=wire.input)]))
        return out
    for i, raw in enumerate(wire.input):
        _item(out, raw, f"input[{i}]")
    if not any(m.role not in ("system", "developer") for m in out):
        raise InvalidRequest(
            "input: at least one message or function_call_output is required.", param="input"
        )
    return out


# --- tools and formats -----------------------------------------------------------------------


def _tools(raw: list[dict[str, Any]] | None) -> list[Tool] | None:
    if not raw:
        return None
    out: list[Tool] = []
    for i, t in enumerate(raw):
        kind = t.get("type")
        if kind != "function":
            raise InvalidRequest(
                f"tools[{i}]: tools of type {kind!r} are not supported. modelplex serves function tools "
                "only; built-in tools (web_search, file_search, code_interpreter, mcp, ...) run at OpenAI.",
                param=f"tools[{i}].type",
            )
        f = _convert(t, _FunctionTool, f"tools[{i}]")
        out.append(
            Tool(name=f.name, description=f.description, parameters=f.parameters or {}, strict=f.strict)
        )
    return out


def _tool_choice(value: _ChoiceMode | dict[str, Any] | None) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ToolChoice(mode=value)
    if value.get("type") == "function":
        return ToolChoice(mode="tool", name=_convert(value, _ToolChoiceFunction, "tool_choice").name)
    raise InvalidRequest(
        f"tool_choice of type {value.get('type')!r} is not supported; use 'auto', 'none', 'required' "
        "or {'type': 'function', 'name': ...}.",
        param="tool_choice.type",
    )


def _format(text: _TextConfig | None) -> ResponseFormat | None:
    f = text.format if text is not None else None
    if f is None:
        return None
    if f.type != "json_schema":
        return ResponseFormat(type=f.type)
    if not f.name:
        raise InvalidRequest("text.format of type json_schema needs a name.", param="text.format.name")
    if f.schema is None:
        raise InvalidRequest("text.format of type json_schema needs a schema.", param="text.format.schema")
    return ResponseFormat(type="json_schema", name=f.name, schema=f.schema, strict=f.strict)


def _passthrough(wire: _Request) -> dict[str, Any]:
    """Options with a Chat Completions twin, for OpenAI-dialect deployments (others ignore them)."""
    extra: dict[str, Any] = {}
    if wire.reasoning is not None and wire.reasoning.effort is not None:
        extra["reasoning_effort"] = wire.reasoning.effort
    if wire.text is not None and wire.text.verbosity is not None:
        extra["verbosity"] = wire.text.verbosity
    for key in ("service_tier", "safety_identifier", "prompt_cache_key"):
        value = getattr(wire, key)
        if value is not None:
            extra[key] = value
    return extra


def parse_chat(body: bytes) -> ChatRequest:
    try:
        raw = _decode_any.decode(body)
        if not isinstance(raw, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        _admit(raw)
        wire = msgspec.convert(raw, _Request)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
        raise decode_error(exc) from None
    if isinstance(wire.input, list) and not wire.input:
        raise InvalidRequest("input: at least one item is required.", param="input")
    extra = _passthrough(wire)
    return ChatRequest(
        model=wire.model,
        messages=_messages(wire),
        stream=bool(wire.stream),
        include_usage=True,
        tools=_tools(wire.tools),
        tool_choice=_tool_choice(wire.tool_choice),
        parallel_tool_calls=wire.parallel_tool_calls,
        response_format=_format(wire.text),
        temperature=wire.temperature,
        top_p=wire.top_p,
        max_tokens=wire.max_output_tokens,
        user=wire.user,
        metadata=dict(wire.metadata) if wire.metadata is not None else None,
        passthrough=extra or None,
        passthrough_dialect="openai" if extra else None,
    )


class ResponsesDialect:
    name = "responses"

    def credential(self, scope: Scope) -> str | None:
        return bearer(scope)

    def parse_chat(self, body: bytes) -> ChatRequest:
        return parse_chat(body)

    def render_chat(self, response: ChatResponse, request: ChatRequest, ctx: RequestContext) -> bytes:
        return render_chat(response, request, ctx)

    def stream_encoder(self, request: ChatRequest, ctx: RequestContext, model: str) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(request, ctx, model)

    def render_error(self, exc: ModelplexError) -> tuple[int, bytes]:
        return openai.render_error(exc)


DIALECT = ResponsesDialect()
