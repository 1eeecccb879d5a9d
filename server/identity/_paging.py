"""How identity listings are paged: the request a caller makes, the page it gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from trellis.server.identity.store import DEFAULT_LIMIT, MAX_LIMIT

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page of a listing to serve.

    ``limit``/``offset`` are seed 002's paging (default 50, at most 1000; a
    limit below one serves one item, as the seed's clients expect).
    """

    limit: int | None = None
    offset: int = 0

    def bounds(self, default: int = DEFAULT_LIMIT) -> tuple[int, int]:
        """The (limit, offset) to serve, clamped to what the store allows."""
        limit = self.limit if self.limit is not None else default
        return max(1, min(int(limit), MAX_LIMIT)), int(self.offset)


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """One page of a listing: its items, how many match in all, and where it
    started (``limit``/``offset``, for seed 002's ``X-*`` headers)."""

    items: tuple[T, ...]
    total: int
    limit: int
    offset: int


#: The first page with the listing's default size.
FIRST_PAGE: Final = PageRequest()
