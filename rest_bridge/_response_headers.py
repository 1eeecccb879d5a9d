"""gRPC response metadata copied onto HTTP answers: rate limits, paging, challenges.

Only an allow-list travels: the rest of the metadata is the server's business
(and may hold internals), so nothing else is ever copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import flask
import grpc

#: Metadata key -> the canonical spelling of its HTTP header.
COPIED_HEADERS: Mapping[str, str] = {
    "x-ratelimit-limit": "X-RateLimit-Limit",
    "x-ratelimit-remaining": "X-RateLimit-Remaining",
    "x-ratelimit-reset": "X-RateLimit-Reset",
    "retry-after": "Retry-After",
    "x-total-count": "X-Total-Count",
    "x-limit": "X-Limit",
    "x-offset": "X-Offset",
    "link": "Link",
    "www-authenticate": "WWW-Authenticate",
}

# These may legitimately repeat (several links, several challenges); for the others
# a later value (the trailers') replaces an earlier one (the initial metadata's).
_REPEATABLE = frozenset({"Link", "WWW-Authenticate"})

Metadata = Iterable[tuple[str, str | bytes]]


def metadata_headers(*metadata: Metadata | None) -> list[tuple[str, str]]:
    """The HTTP headers for the allow-listed keys of ``metadata``, in order.

    Values that could split or corrupt an HTTP header (control characters,
    non-ASCII) are dropped.
    """
    headers: list[tuple[str, str]] = []
    for pairs in metadata:
        for key, value in pairs or ():
            header = COPIED_HEADERS.get(key.lower())
            if header is None or not isinstance(value, str) or not _is_header_safe(value):
                continue
            if header not in _REPEATABLE:
                headers = [(name, v) for name, v in headers if name != header]
            headers.append((header, value))
    return headers


def call_headers(call: object) -> list[tuple[str, str]]:
    """The copied headers of a finished call (initial and trailing metadata).

    ``call`` is a ``grpc.Call`` (a stub's ``with_call`` result, or a failed call's
    RpcError); anything else has no metadata.
    """
    if not isinstance(call, grpc.Call):
        return []
    # grpc's stubs type metadata loosely; values of non "-bin" keys are str.
    initial: Any = call.initial_metadata()
    trailing: Any = call.trailing_metadata()
    return metadata_headers(initial, trailing)


def apply_headers(response: flask.Response, headers: Iterable[tuple[str, str]]) -> flask.Response:
    """Sets ``headers`` on ``response``, keeping repeats of the repeatable ones."""
    for name, value in headers:
        if name in _REPEATABLE:
            response.headers.add(name, value)
        else:
            response.headers[name] = value
    return response


def _is_header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable()
