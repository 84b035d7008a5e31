"""The error tree. Foreign errors are translated into it once, at each boundary, by type and status.

    ModelplexError
     ├── RequestError                   the caller's request cannot be served as sent (4xx)
     │    ├── InvalidRequest            400  malformed JSON, wrong type, bad value
     │    ├── PayloadTooLarge           413
     │    ├── AuthenticationFailed      401  missing / unknown / revoked gateway key
     │    ├── PermissionDenied          403  key not allowed this model or route
     │    └── ModelNotFound             404  no such public model or route
     ├── LimitExceeded                  429  gateway rate limit or budget (Retry-After)
     ├── Unavailable                    503  shedding load, draining, or state backend down
     ├── UpstreamError                  one attempt at one deployment failed
     │    ├── UpstreamConnectError          connect refused / reset before a response
     │    ├── UpstreamTimeout               connect, first token, idle or total timeout
     │    ├── UpstreamServerError           5xx, 408
     │    ├── UpstreamMalformed             body or event that does not parse
     │    │    └── SkippedEvent             one undecodable event; the stream goes on
     │    ├── UpstreamRateLimited           429 (carries retry_after)
     │    ├── UpstreamAuthError             401 / 403 with the deployment's credential
     │    ├── UpstreamNotFound              404 model not found upstream
     │    └── UpstreamBadRequest            400 / 413 / 422: the request itself
     │         ├── ContextLengthExceeded
     │         └── ContentPolicyViolation
     ├── StreamInterrupted              an upstream stream failed after the client saw bytes
     └── AllAttemptsFailed              aggregate: every planned attempt failed; keeps each cause

Each UpstreamError subclass carries the execution contract of DESIGN.md §4 as class data:
whether the same deployment may be retried, whether to fall back, whether the circuit breaker
counts it. The routing code reads these flags; it never branches on status codes itself.
"""

from __future__ import annotations

from dataclasses import dataclass


class ModelplexError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RequestError(ModelplexError):
    status = 400
    code = "invalid_request_error"


class InvalidRequest(RequestError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class PayloadTooLarge(RequestError):
    status = 413
    code = "request_too_large"


class AuthenticationFailed(RequestError):
    status = 401
    code = "invalid_api_key"


class PermissionDenied(RequestError):
    status = 403
    code = "permission_denied"


class ModelNotFound(RequestError):
    status = 404
    code = "model_not_found"


class LimitExceeded(ModelplexError):
    status = 429
    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, retry_after: float | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers or {}


class Unavailable(ModelplexError):
    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(ModelplexError):
    status = 502
    code = "upstream_error"
    retry_same: bool = True  # may the same deployment be tried again
    fallback: bool = True  # may the next deployment / model be tried
    breaker: bool = True  # does the circuit breaker count it as a failure
    # In the caller's dialect, the status to report when this is the final outcome.
    client_status: int = 502

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.provider_code = provider_code
        self.retry_after = retry_after


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_error"


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"
    client_status = 504

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase  # connect | first_token | idle | total
        # A provider that sent nothing until its first-token timeout is not tried again at once.
        self.retry_same = phase not in ("first_token", "total")


class UpstreamServerError(UpstreamError):
    code = "upstream_server_error"


class UpstreamMalformed(UpstreamError):
    code = "upstream_malformed_response"


class SkippedEvent(UpstreamMalformed):
    """One stream event that does not parse, in a stream that otherwise goes on: skipped, counted."""


class UpstreamRateLimited(UpstreamError):
    code = "upstream_rate_limited"
    client_status = 429


class UpstreamAuthError(UpstreamError):
    code = "upstream_auth_error"
    retry_same = False


class UpstreamNotFound(UpstreamError):
    code = "upstream_model_not_found"
    retry_same = False


class UpstreamBadRequest(UpstreamError):
    code = "invalid_request_error"
    retry_same = False
    fallback = False
    breaker = False
    client_status = 400


class ContextLengthExceeded(UpstreamBadRequest):
    code = "context_length_exceeded"
    # Falls back only to a larger-context model; the planner decides which qualify.


class ContentPolicyViolation(UpstreamBadRequest):
    code = "content_policy_violation"


class StreamInterrupted(ModelplexError):
    """An upstream stream failed after its first chunk reached the client."""

    status = 502
    code = "stream_interrupted"

    def __init__(self, message: str, cause: UpstreamError) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    deployment: str
    provider: str
    error: UpstreamError
    elapsed_ms: float

    def describe(self) -> str:
        status = f" {self.error.upstream_status}" if self.error.upstream_status else ""
        return f"{self.deployment} ({self.provider}):{status} {self.error.code}: {self.error.message}"


class AllAttemptsFailed(ModelplexError):
    """Every planned attempt failed. Keeps every cause; reports the most telling one's status."""

    code = "all_attempts_failed"

    def __init__(self, failures: list[AttemptFailure], reason: str | None = None) -> None:
        self.failures = failures
        lead = reason or f"all {len(failures)} attempt(s) failed"
        detail = "; ".join(f.describe() for f in failures)
        super().__init__(f"{lead}: {detail}" if failures else lead)
        self.status = self._status()
        last = failures[-1].error if failures else None
        self.retry_after = last.retry_after if last is not None else None
        if last is not None and isinstance(last, UpstreamBadRequest):
            self.code = last.code

    def _status(self) -> int:
        if not self.failures:
            return 503
        last = self.failures[-1].error
        if isinstance(last, UpstreamBadRequest):
            return last.client_status
        if all(isinstance(f.error, UpstreamRateLimited) for f in self.failures):
            return 429
        if all(isinstance(f.error, UpstreamTimeout) for f in self.failures):
            return 504
        return 502


def error_for_status(status: int) -> type[UpstreamError]:
    """The error class for an upstream HTTP status when the body says nothing more specific."""
    if status == 429:
        return UpstreamRateLimited
    if status in (401, 403):
        return UpstreamAuthError
    if status == 404:
        return UpstreamNotFound
    if status in (400, 413, 422):
        return UpstreamBadRequest
    if status == 408 or status >= 500:
        return UpstreamServerError
    return UpstreamBadRequest
