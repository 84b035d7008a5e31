"""Deterministic content for simulated answers: text, token counts, tool arguments, JSON from a schema.

The simulator owns its own (deliberately simple) token count, so usage is exact and repeatable:
a text of n characters is ceil(n / 4) tokens, each message adds 3, and every generated word is one
token.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "bright",
    "stars",
    "watch",
    "quietly",
    "from",
    "distant",
    "hills",
    "and",
    "rivers",
    "carry",
    "stories",
    "to",
    "the",
    "patient",
    "sea",
    "under",
    "silver",
    "light",
]


def count_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def prompt_tokens(texts: list[str]) -> int:
    return sum(count_tokens(t) + 3 for t in texts) or 1


def words(prompt: str, n: int) -> list[str]:
    """n words chosen by the prompt's hash: the same prompt always gets the same answer."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")
    out = []
    for _ in range(max(n, 0)):
        seed = (seed * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append(_WORDS[(seed >> 33) % len(_WORDS)])
    return out


def answer_tokens(prompt: str, n: int, echo_text: str | None) -> list[str]:
    """The answer as a list of tokens, each sent as one stream chunk (leading space after the first)."""
    base = (["echo:", *echo_text.split()] if echo_text is not None else words(prompt, n))[: max(n, 1)]
    return [w if i == 0 else " " + w for i, w in enumerate(base)]


def from_schema(schema: Any, depth: int = 0) -> Any:
    """A small value that satisfies a JSON schema (the common subset: types, enum, properties)."""
    if not isinstance(schema, dict) or depth > 8:
        return "value"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return from_schema(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: from_schema(sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [from_schema(schema.get("items", {}), depth + 1)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "sample"


def tool_arguments(schema: Any) -> str:
    value = from_schema(schema or {"type": "object"})
    return json.dumps(value if isinstance(value, dict) else {"value": value}, separators=(",", ":"))


def split_in(text: str, parts: int) -> list[str]:
    """Split text into `parts` roughly equal pieces (for streamed tool arguments)."""
    if parts <= 1 or len(text) <= parts:
        return [text]
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]
