"""Paging fields of list requests in, seed 002's paging headers out."""

from __future__ import annotations

from typing import Any

import grpc

from trellis.server.api import _status
from trellis.server.identity import Listing, PageRequest


def page_request(request: Any) -> PageRequest:
    """The page a list request asks for (``limit`` unset: the listing's default)."""
    return PageRequest(
        limit=request.limit if request.HasField("limit") else None, offset=request.offset
    )


def send_page_headers(context: grpc.ServicerContext, page: Listing[Any]) -> None:
    """Seed 002's pagination headers, as trailers the bridge copies to HTTP."""
    _status.add_trailers(
        context,
        (
            ("x-total-count", str(page.total)),
            ("x-limit", str(page.limit)),
            ("x-offset", str(page.offset)),
        ),
    )
