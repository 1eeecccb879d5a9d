"""HTTP request headers forwarded to the gRPC server as call metadata."""

from __future__ import annotations

import flask

# Auth, tenancy and tracing are decided by the gRPC server's interceptors, so the
# bridge passes these through untouched instead of interpreting them.
_FORWARDED_HEADERS = (
    ("Authorization", "authorization"),
    ("X-Organization-ID", "x-organization-id"),
    ("X-Request-ID", "x-request-id"),
    # The request id of an idempotent start (RunWorkflow's `request_id`).
    ("Idempotency-Key", "idempotency-key"),
)


# The metadata of a call the server is to refuse with the bridge's message
# (`trellis.v1.refused_by_server`); `-bin`, as the message may be any text.
REFUSAL_KEY = "trellis-refusal-bin"


class InvalidHeaderError(ValueError):
    """A header that cannot travel as gRPC metadata (non-ASCII or control characters)."""


def _is_metadata_safe(value: str) -> bool:
    return value.isascii() and value.isprintable()


def forwarded_metadata(request: flask.Request) -> tuple[tuple[str, str], ...]:
    """The call metadata for a request: forwarded headers and ``x-forwarded-for``."""
    metadata: list[tuple[str, str]] = []
    headers = request.headers
    for header, key in _FORWARDED_HEADERS:
        value = headers.get(header)
        if value:
            if not _is_metadata_safe(value):
                raise InvalidHeaderError(f"header {header} holds characters gRPC cannot carry")
            metadata.append((key, value))
    if request.remote_addr:
        metadata.append(("x-forwarded-for", request.remote_addr))
    return tuple(metadata)
