"""Typed errors, each carrying its OpenAI error envelope fields and HTTP status.

The tree::

    ServiceError (500, server_error)
    ├── InvalidRequest (400, invalid_request_error)  - a bad field; ``param`` names it
    ├── AuthenticationError (401, invalid_request_error / invalid_api_key)
    ├── InsufficientQuota (402, insufficient_quota)   - the key has no credit left
    ├── ModelNotFound (404, invalid_request_error / model_not_found)
    ├── RequestTimeout (408, invalid_request_error / request_timeout) - a stalled body
    ├── PayloadTooLarge (413, invalid_request_error / request_too_large)
    ├── RateLimited (429, rate_limit_error)           - ``retry_after`` seconds; ``Retry-After``
    ├── CapabilityError (500, server_error)           - a broken capability file
    └── EngineUnavailable (503, server_error)         - the runtime is down or overloaded

The envelope is OpenAI's ``{"error": {"message", "type", "param", "code"}}``; the status
codes are those of the published API this project implements (400, 401, 402, 404, 409, 413, 429, 500, 503),
plus HTTP's 408 for a client that stops sending its body (RFC 9110 section 15.5.9).
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CapabilityError",
    "EngineUnavailable",
    "InsufficientQuota",
    "InvalidRequest",
    "ModelNotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RequestConflict",
    "RequestTimeout",
    "ServiceError",
]


class ServiceError(Exception):
    """Base of every error the service reports to a client.

    Attributes:
        message: human-readable text that names the problem.
        param: the request field at fault (a JSON path such as ``messages[0].role``), or None.
        code: a short machine-readable code, or None.
    """

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the error response carries (none, except for :class:`RateLimited` and
        :class:`AuthenticationError`)."""
        return {}

    def to_dict(self) -> dict:
        """Return the OpenAI error envelope ``{"error": {...}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ServiceError):
    """The request is malformed or a field is out of range (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(ServiceError):
    """Missing or wrong API key (HTTP 401, with ``WWW-Authenticate: Bearer``).

    Args:
        message: what is wrong (never the key itself).
        bearer_error: RFC 6750's ``error`` attribute of the challenge: ``invalid_token`` (an
            unknown or revoked key), ``invalid_request`` (a malformed header), or None when
            the request carried no key at all (section 3.1: then the challenge has no error).
    """

    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"

    def __init__(self, message: str, *, bearer_error: str | None = "invalid_token", code: str | None = None):
        super().__init__(message, code=code)
        self.bearer_error = bearer_error

    @property
    def headers(self) -> dict[str, str]:
        """The RFC 6750 challenge, ``Bearer realm="chatcap"`` plus the ``error`` when a key was
        sent: clients (MCP Inspector) read it to send their bearer token instead of starting an
        OAuth sign-in."""
        error = f', error="{self.bearer_error}"' if self.bearer_error else ""
        return {"WWW-Authenticate": f'Bearer realm="chatcap"{error}'}


class ModelNotFound(ServiceError):
    """The requested model is not served here (HTTP 404, code ``model_not_found``)."""

    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class CapabilityError(ServiceError):
    """The capability file or a schema is broken; raised at start-up, nothing is served."""


class EngineUnavailable(ServiceError):
    """The inference runtime cannot take the request now (HTTP 503)."""

    status_code = 503
    default_code = "engine_unavailable"


class InsufficientQuota(ServiceError):
    """The API key has no credit left (HTTP 402, OpenAI's ``insufficient_quota``)."""

    status_code = 402
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class RequestConflict(ServiceError):
    """A request with the same idempotency key is still running (HTTP 409, as OpenAI and Stripe answer)."""

    status_code = 409
    error_type = "invalid_request_error"
    default_code = "idempotency_conflict"


class PayloadTooLarge(ServiceError):
    """The request body is larger than the server accepts (HTTP 413)."""

    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RequestTimeout(ServiceError):
    """The client stopped sending its request body for longer than the read timeout (HTTP 408)."""

    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class RateLimited(ServiceError):
    """A requests- or tokens-per-minute limit is exhausted (HTTP 429 with ``Retry-After``).

    Args:
        message: names the limit that was hit.
        retry_after: whole seconds (>= 1) until the limit admits the request again.
    """

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds (RFC 9110 section 10.2.3)."""
        return {"Retry-After": str(self.retry_after)}
