"""How identity listings are paged: the request a caller makes, the page it gets.

Two ways to page, never mixed in one request:

* AIP-158 ``page_size``/``page_token``: keyset pages behind signed tokens
  (``trellis.server.core.pagination``) bound to the listing and its filters.
  Without a size a page holds the listing's default.
* seed 002's ``limit``/``offset`` (default 50, at most 1000; a limit below one
  serves one item, as the seed's clients expect) with the total count.

Every page that is not the last also carries the token of the next one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from trellis.server.core.errors import InvalidArgument
from trellis.server.core.pagination import page_size
from trellis.server.identity.store import DEFAULT_LIMIT, MAX_LIMIT

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page of a listing to serve."""

    limit: int | None = None
    offset: int = 0
    page_size: int = 0
    page_token: str = ""

    def __post_init__(self) -> None:
        if (self.page_size or self.page_token) and (self.limit is not None or self.offset):
            raise InvalidArgument("give page_size/page_token or limit/offset, not both")

    @property
    def by_token(self) -> bool:
        """Whether the caller pages with page tokens rather than limit/offset."""
        return bool(self.page_size or self.page_token)

    def bounds(self, default: int = DEFAULT_LIMIT) -> tuple[int, int]:
        """The (limit, offset) to serve, clamped to what the store allows."""
        limit = self.limit if self.limit is not None else default
        return max(1, min(int(limit), MAX_LIMIT)), int(self.offset)

    def size(self, default: int = DEFAULT_LIMIT) -> int:
        """The page size to serve by token (``default`` when unset)."""
        return page_size(self.page_size, default=default, maximum=MAX_LIMIT)


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """One page of a listing. ``total`` (how many match in all), ``limit`` and
    ``offset`` answer limit/offset requests (seed 002's ``X-*`` headers);
    ``total`` is None for pages served by token."""

    items: tuple[T, ...]
    total: int | None
    limit: int
    offset: int
    next_page_token: str = ""


#: The first page with the listing's default size.
FIRST_PAGE: Final = PageRequest()


def listing_scope(name: str, *filters: object) -> str:
    """The scope a page token is bound to: the listing and every filter of it."""
    return json.dumps([name, *filters], separators=(",", ":"), default=str)
