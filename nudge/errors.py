"""One exception hierarchy; the HTTP layer maps it to status codes in one place."""

from __future__ import annotations


class NudgeError(Exception):
    """Base of every error Nudge raises on purpose."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class ValidationError(NudgeError):
    status = 400
    code = "invalid"


class PayloadTooLarge(NudgeError):
    status = 413
    code = "too_large"


class AuthError(NudgeError):
    status = 401
    code = "unauthorized"


class Forbidden(NudgeError):
    """Authenticated, but this role or key scope may not do this (or CSRF token missing)."""

    status = 403
    code = "forbidden"


class NotFound(NudgeError):
    status = 404
    code = "not_found"


class Conflict(NudgeError):
    status = 409
    code = "conflict"


class TooManyRequests(NudgeError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(NudgeError):
    status = 503
    code = "unavailable"


class ConfigError(NudgeError):
    code = "config"
