"""Request features that routing rules, capability filters and strategies look at, computed once."""

from __future__ import annotations

from dataclasses import dataclass

from modelplex.runtime import Caller
from modelplex.types import ChatRequest, EmbeddingRequest, Image

# ~4 characters a token for English text: the common rule of thumb, used for routing decisions.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


@dataclass(frozen=True, slots=True)
class Features:
    prompt_text: str
    prompt_chars: int
    prompt_tokens: int  # estimate
    prompt_words: int
    max_tokens: int | None
    tools: bool
    json_schema: bool  # a JSON object or JSON schema response was asked for
    vision: bool
    stream: bool
    task: str | None
    tags: frozenset[str]
    team: str | None
    tier: str | None
    key: str | None
    dialect: str


def _tags(request: ChatRequest, header: str | None) -> frozenset[str]:
    tags: set[str] = set()
    if header:
        tags.update(t.strip() for t in header.split(",") if t.strip())
    meta = request.metadata or {}
    raw = meta.get("tags")
    if isinstance(raw, str):
        tags.update(t.strip() for t in raw.split(",") if t.strip())
    elif isinstance(raw, list):
        tags.update(str(t) for t in raw)
    return frozenset(tags)


def features(
    request: ChatRequest,
    caller: Caller | None,
    dialect: str,
    tags_header: str | None,
    task_header: str | None,
    for_rules: bool = True,
) -> Features:
    """`for_rules=False` skips what only routing rules read (words, tags, task)."""
    text = request.prompt_text()
    task = task_header
    if for_rules and task is None and request.metadata:
        value = request.metadata.get("task")
        task = str(value) if value is not None else None
    tool_chars = sum(
        len(t.name) + len(str(t.parameters)) + len(t.description or "") for t in request.tools or ()
    )
    chars = len(text) + tool_chars
    return Features(
        prompt_text=text,
        prompt_chars=chars,
        prompt_tokens=chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS * len(request.messages),
        prompt_words=len(text.split()) if for_rules else 0,
        max_tokens=request.max_tokens,
        tools=bool(request.tools),
        json_schema=request.response_format is not None and request.response_format.type != "text",
        vision=any(isinstance(p, Image) for m in request.messages for p in m.content),
        stream=request.stream,
        task=task,
        tags=_tags(request, tags_header) if for_rules else frozenset(),
        team=caller.team if caller else None,
        tier=caller.tier if caller else None,
        key=caller.key_name if caller else None,
        dialect=dialect,
    )


def embedding_features(request: EmbeddingRequest, caller: Caller | None, dialect: str) -> Features:
    text = "\n".join(i if isinstance(i, str) else " ".join(map(str, i)) for i in request.inputs)
    return Features(
        prompt_text=text,
        prompt_chars=len(text),
        prompt_tokens=len(text) // CHARS_PER_TOKEN + 1,
        prompt_words=len(text.split()),
        max_tokens=None,
        tools=False,
        json_schema=False,
        vision=False,
        stream=False,
        task=None,
        tags=frozenset(),
        team=caller.team if caller else None,
        tier=caller.tier if caller else None,
        key=caller.key_name if caller else None,
        dialect=dialect,
    )
