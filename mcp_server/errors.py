"""Typed errors, each carrying its OpenAI error envelope fields and HTTP status.

The tree::

    ServiceError (500, server_error)
    ├── InvalidRequest (400, invalid_request_error)  - a bad field; ``param`` names it
    ├── AuthenticationError (401, invalid_request_error / invalid_api_key)
    ├── ModelNotFound (404, invalid_request_error / model_not_found)
    ├── CapabilityError (500, server_error)           - a broken capability file
    └── EngineUnavailable (503, server_error)         - the runtime is down or overloaded

The envelope is OpenAI's ``{"error": {"message", "type", "param", "code"}}``; the status
codes are those of the seed API (``shared/seed``: 400, 401, 402, 404, 413, 429, 500, 503).
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CapabilityError",
    "EngineUnavailable",
    "InvalidRequest",
    "ModelNotFound",
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
    """Missing or wrong API key (HTTP 401)."""

    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


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
