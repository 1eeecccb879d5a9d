"""Exceptions of the SDK and the mapping of gRPC failures onto them."""

from __future__ import annotations

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "ConnectionLost",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "JobCancelled",
    "LeaseLost",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TrellisError",
    "Unauthenticated",
    "Unimplemented",
    "wrap_rpc_error",
]


class TrellisError(Exception):
    """Base class of every error the SDK raises.

    ``code`` is the gRPC status code behind the error, when there is one.
    """

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class JobCancelled(TrellisError):
    """The job was cancelled; raised by :meth:`JobContext.raise_if_cancelled`.

    A handler may also raise it itself to end the job as cancelled (a
    non-retryable failure).
    """


class LeaseLost(JobCancelled):
    """The worker no longer holds the job's lease (it expired or the job ended).

    A subclass of :class:`JobCancelled` because a handler must stop in both
    cases; the difference is that nothing is reported for a lost lease.
    """


class ConnectionLost(TrellisError):
    """The server could not be reached, or the connection broke (UNAVAILABLE)."""


class NotFound(TrellisError):
    """The named workflow, run, job or lease does not exist (NOT_FOUND)."""


class InvalidArgument(TrellisError):
    """The request was rejected as malformed (INVALID_ARGUMENT)."""


class AlreadyExists(TrellisError):
    """The resource already exists (ALREADY_EXISTS)."""


class Aborted(TrellisError):
    """The request lost a race, e.g. named a spent lease (ABORTED)."""


class FailedPrecondition(TrellisError):
    """The system is not in a state the request needs (FAILED_PRECONDITION)."""


class PermissionDenied(TrellisError):
    """The caller lacks the scope the call needs (PERMISSION_DENIED)."""


class Unauthenticated(TrellisError):
    """No valid credentials were presented (UNAUTHENTICATED)."""


class ResourceExhausted(TrellisError):
    """A quota or rate limit was hit (RESOURCE_EXHAUSTED)."""


class DeadlineExceeded(TrellisError):
    """The call (or a wait) did not finish in time (DEADLINE_EXCEEDED)."""


class Unimplemented(TrellisError):
    """The server does not implement the call (UNIMPLEMENTED)."""


_BY_CODE: dict[grpc.StatusCode, type[TrellisError]] = {
    grpc.StatusCode.UNAVAILABLE: ConnectionLost,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def rpc_code(err: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call (UNKNOWN when it carries none)."""
    # Every RpcError grpc raises for a call is also a grpc.Call, but the type
    # does not say so; errors built by hand (tests, interceptors) may not be.
    code = getattr(err, "code", None)
    if callable(code):
        value = code()
        if isinstance(value, grpc.StatusCode):
            return value
    return grpc.StatusCode.UNKNOWN


def rpc_details(err: grpc.RpcError) -> str:
    """The server's message of a failed call ('' when it carries none)."""
    details = getattr(err, "details", None)
    if callable(details):
        value = details()
        if isinstance(value, str):
            return value
    return ""


def wrap_rpc_error(err: grpc.RpcError, context: str = "") -> TrellisError:
    """Turns a raw gRPC failure into the matching :class:`TrellisError` subclass.

    ``context`` (e.g. ``"cannot reach localhost:50051"``) prefixes the message.
    """
    code = rpc_code(err)
    details = rpc_details(err) or code.name.lower().replace("_", " ")
    message = f"{context}: {details}" if context else details
    return _BY_CODE.get(code, TrellisError)(message, code)
