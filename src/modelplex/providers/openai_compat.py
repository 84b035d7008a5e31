"""OpenAI-compatible servers, each a declaration over the OpenAI adapter: base URL, auth, renames."""

from __future__ import annotations

from modelplex.providers.openai import OpenAIAdapter


def _local(name: str, base_url: str | None) -> OpenAIAdapter:
    """A self-hosted server: no key needed, classic `max_tokens`, no `developer` role."""
    return OpenAIAdapter(
        name=name,
        default_base_url=base_url,
        requires_key=False,
        max_tokens_field="max_tokens",
        developer_role=False,
    )


ADAPTERS: tuple[OpenAIAdapter, ...] = (
    # Any server that speaks OpenAI's API; base_url is required, the key optional.
    OpenAIAdapter(
        name="openai_compatible", default_base_url=None, requires_key=False, max_tokens_field="max_tokens"
    ),
    OpenAIAdapter(name="groq", default_base_url="https://api.groq.com/openai/v1"),
    OpenAIAdapter(
        name="together", default_base_url="https://api.together.xyz/v1", max_tokens_field="max_tokens"
    ),
    OpenAIAdapter(
        name="deepseek",
        default_base_url="https://api.deepseek.com/v1",
        max_tokens_field="max_tokens",
        developer_role=False,
    ),
    OpenAIAdapter(
        name="fireworks",
        default_base_url="https://api.fireworks.ai/inference/v1",
        max_tokens_field="max_tokens",
    ),
    OpenAIAdapter(
        name="openrouter", default_base_url="https://openrouter.ai/api/v1", max_tokens_field="max_tokens"
    ),
    _local("vllm", None),
    _local("ollama", "http://localhost:11434/v1"),
    _local("llamacpp", "http://localhost:8080/v1"),
    _local("lmstudio", "http://localhost:1234/v1"),
)
