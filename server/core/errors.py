"""Domain errors raised by the service layer; each edge maps them to its status."""

from __future__ import annotations


class TrellisError(Exception):
    """Base of all domain errors; the message is safe to show to callers.

    ``reason`` is the ErrorInfo reason of the status; empty leaves it to the
    status code (``not_found``, ``invalid_argument``...).
    """

    reason: str = ""


class NotFound(TrellisError):
    """An unknown id (NOT_FOUND / 404)."""


class InvalidArgument(TrellisError):
    """Malformed input (INVALID_ARGUMENT / 400); nothing was changed."""


class LeaseConflict(TrellisError):
    """A stale, expired, finished or unknown lease (ABORTED / 409)."""

    reason = "lease_lost"


class Aborted(TrellisError):
    """A concurrent change came first, e.g. an edit made against a version
    that is no longer current (ABORTED / 409); nothing was changed."""


class FailedPrecondition(TrellisError):
    """The request is valid but the resource is not in a state to honour it."""


class Forbidden(TrellisError):
    """The caller's scopes do not cover what the request would do
    (PERMISSION_DENIED / 403), judged by the service where the method's one
    declared scope is not enough."""

    reason = "insufficient_scope"


class Unavailable(TrellisError):
    """The server is shutting down or the database is unreachable."""


class Conflict(TrellisError):
    """A uniqueness rule was violated (ALREADY_EXISTS / 409); nothing was changed."""
