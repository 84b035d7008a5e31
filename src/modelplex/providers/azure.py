"""Azure OpenAI: OpenAI's wire format on Azure's paths, with Azure's key header.

Two path styles, chosen by the deployment's `api_version` (the official `openai` SDK's
`lib/azure.py` builds the first; Azure's "API version lifecycle" page documents the second):
  a dated version (default below)  {base}/openai/deployments/{model}/chat/completions?api-version=...
                                   where `model` is the Azure deployment name;
  "v1" (or "preview")              {base}/openai/v1/chat/completions, model in the body.
Content filtering arrives as error code `content_filter` with `innererror.code`
ResponsibleAIPolicyViolation (a ContentPolicyViolation), or as finish_reason `content_filter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import msgspec

from modelplex.config.schema import Deployment
from modelplex.errors import UpstreamError
from modelplex.providers import errors as perr
from modelplex.providers.base import Target
from modelplex.providers.openai import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"  # GA; has max_completion_tokens and stream_options
V1 = frozenset({"v1", "preview"})
_POLICY_INNER = frozenset({"ResponsibleAIPolicyViolation"})


class _Inner(msgspec.Struct):
    code: str | None = None


class _Error(msgspec.Struct):
    code: str | int | None = None
    message: str | None = None
    innererror: _Inner | None = None


class _Envelope(msgspec.Struct):
    error: _Error | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True)
class AzureOpenAIAdapter(OpenAIAdapter):
    name: str = "azure"
    default_base_url: str | None = None  # https://{resource}.openai.azure.com
    auth_header: str = "api-key"
    auth_prefix: str = ""
    # Dated API versions before the `developer` role (2024-12-01-preview) refuse it; `system` works
    # with every model and version.
    developer_role: bool = False

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        problems = super().check(deployment)
        if deployment.base_url is None:
            problems = [p for p in problems if p[0] != "base_url"]
            problems.append(("base_url", "provider 'azure' needs the resource endpoint as base_url"))
        return problems

    def prepare(self, deployment: Deployment) -> Target:
        target = super().prepare(deployment)
        base = target.base_url
        # Take the resource endpoint however it was written: with or without /openai[/v1].
        for suffix in ("/openai/v1", "/openai"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        target.base_url = base
        return target

    def url(self, target: Target, path: str) -> str:
        version = target.deployment.api_version or DEFAULT_API_VERSION
        if version in V1:
            query = "?api-version=preview" if version == "preview" else ""
            return f"{target.base_url}/openai/v1/{path}{query}"
        deployment = quote(target.model, safe="")
        return (
            f"{target.base_url}/openai/deployments/{deployment}/{path}?api-version={quote(version, safe='')}"
        )

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        try:
            err = _envelope_decoder.decode(body).error
        except (msgspec.DecodeError, msgspec.ValidationError):
            err = None
        if err is not None and err.innererror is not None and err.innererror.code in _POLICY_INNER:
            return perr.build(
                status, headers, err.message or "", provider_code=err.innererror.code, content_policy=True
            )
        return super().error(status, headers, body)


ADAPTER = AzureOpenAIAdapter()
