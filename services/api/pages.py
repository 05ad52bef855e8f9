"""One envelope for every list the API returns: ``{"data": [...], "has_more": bool, "next_cursor": str | null}``.

A client asks for the next page by passing ``next_cursor`` back as the ``cursor`` query parameter. The cursor is
opaque to clients; each list decides what it encodes (today the last item's id, as text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool
    next_cursor: str | None = None


def page_of(items: Sequence[T], limit: int, cursor_of: Callable[[T], object]) -> Page[T]:
    """A page from up to ``limit + 1`` items read (the extra one only says that more exist)."""
    data = list(items[:limit])
    has_more = len(items) > limit
    return Page[T](data=data, has_more=has_more, next_cursor=str(cursor_of(data[-1])) if has_more and data else None)
