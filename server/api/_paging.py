"""Paging fields of list requests in, seed 002's paging headers out."""

from __future__ import annotations

from typing import Any

import grpc

from trellis.server.api import _status
from trellis.server.identity import Listing, PageRequest


def token_page(request: Any) -> PageRequest:
    """The page an AIP-158 list request (``page_size``, ``page_token``) asks for."""
    return PageRequest(page_size=request.page_size, page_token=request.page_token)


def page_request(request: Any) -> PageRequest:
    """The page a list request with both ways of paging asks for (``limit``
    unset: the listing's default)."""
    return PageRequest(
        limit=request.limit if request.HasField("limit") else None,
        offset=request.offset,
        page_size=request.page_size,
        page_token=request.page_token,
    )


def send_page_headers(context: grpc.ServicerContext, page: Listing[Any]) -> None:
    """Seed 002's pagination headers, as trailers the bridge copies to HTTP, for
    pages asked for by limit/offset."""
    if page.total is None:
        return
    _status.add_trailers(
        context,
        (
            ("x-total-count", str(page.total)),
            ("x-limit", str(page.limit)),
            ("x-offset", str(page.offset)),
        ),
    )
