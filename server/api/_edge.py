"""What every servicer shares: domain errors mapped to gRPC statuses, and
the caller as the engine and identity services take it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from trellis.server.api import _status
from trellis.server.api._auth import client_address, current_principal
from trellis.server.core.errors import (
    Aborted,
    Conflict,
    FailedPrecondition,
    Forbidden,
    InvalidArgument,
    LeaseConflict,
    NotFound,
    TrellisError,
    Unavailable,
)
from trellis.server.core.principal import Principal
from trellis.server.identity.principal import (
    MissingOrganization,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)

F = TypeVar("F", bound=Callable[..., Any])

_CODES: dict[type[TrellisError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    LeaseConflict: grpc.StatusCode.ABORTED,
    Aborted: grpc.StatusCode.ABORTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    MissingOrganization: grpc.StatusCode.INVALID_ARGUMENT,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _code_of(exc: TrellisError) -> grpc.StatusCode:
    for kind in type(exc).__mro__:
        code = _CODES.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, exc: TrellisError) -> NoReturn:
    _status.abort(
        context,
        _code_of(exc),
        str(exc),
        reason=exc.reason or None,
        http_status=422 if isinstance(exc, MissingOrganization) else None,
        metadata=exc.headers.items() if isinstance(exc, RateLimited) else (),
    )


# The REST bridge's request for a refusal (`trellis.v1.refused_by_server` in
# options.proto): a value it could not read, to be refused here after the
# interceptors have checked the caller and counted the call.
_REFUSAL_KEY = "trellis-refusal-bin"


def _check_refusal(context: grpc.ServicerContext) -> None:
    for key, value in context.invocation_metadata():
        if key == _REFUSAL_KEY:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            raise InvalidArgument(text)


def unary(fn: F) -> F:
    """Maps domain errors of a unary handler to gRPC statuses (the call
    interceptor, ``_wire``, answers anything else)."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            _check_refusal(context)
            return fn(self, request, context)
        except TrellisError as exc:
            abort(context, exc)

    return wrapper  # type: ignore[return-value]


def streaming(fn: F) -> F:
    """Maps domain errors of a server-streaming handler to gRPC statuses."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            _check_refusal(context)
            yield from fn(self, request, context)
        except TrellisError as exc:
            abort(context, exc)

    return wrapper  # type: ignore[return-value]


def principal_of(context: grpc.ServicerContext) -> Principal:
    """The caller, as the auth interceptor resolved it."""
    return current_principal()


def caller_of(context: grpc.ServicerContext) -> tuple[Principal, str]:
    """The caller and its client address, for operations the audit log records."""
    return current_principal(), client_address(context)


__all__ = ["abort", "caller_of", "principal_of", "streaming", "unary"]
