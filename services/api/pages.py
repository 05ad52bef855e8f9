"""One envelope for every list the API returns: ``{"data": [...], "has_more": bool, "next_cursor": str | null}``.

A client asks for the next page by passing ``next_cursor`` back as the ``cursor`` query parameter. The cursor is
opaque to clients; each list decides what it encodes (today the last item's id, as text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from services.api.types import MAX_BIGINT
from services.core.errors import InvalidRequest

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


class InvalidCursor(InvalidRequest):
    code = "invalid_cursor"


# The ``cursor`` query parameter of every list: the ``next_cursor`` of the page before.
Cursor = Annotated[
    str | None, Query(max_length=200, description="The `next_cursor` of the previous page; absent for the first page.")
]


def id_cursor(cursor: str | None) -> int | None:
    """The id a cursor of a list paged by id encodes (None for the first page); 422 ``invalid_cursor`` otherwise."""
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit() and 1 <= int(cursor) <= MAX_BIGINT):
        raise InvalidCursor("the cursor is not one this list gave", cursor=cursor[:40])
    return int(cursor)


def composite_cursor(moment: datetime, *parts: object) -> str:
    """A cursor of a list ordered by a moment and then other keys (a rail, an id): ``<ISO moment>~<part>~...``."""
    return "~".join([moment.astimezone(UTC).isoformat(), *(str(part) for part in parts)])


def parse_composite_cursor(cursor: str, parts: int) -> tuple[datetime, list[str]]:
    """The moment and the ``parts`` other keys of a ``composite_cursor``; 422 ``invalid_cursor`` otherwise."""
    fields = cursor.split("~")
    try:
        if len(fields) != parts + 1:
            raise ValueError(cursor)
        moment = datetime.fromisoformat(fields[0])
        if moment.tzinfo is None:
            raise ValueError(cursor)
        return moment.astimezone(UTC), fields[1:]
    except (ValueError, OverflowError):
        raise InvalidCursor("the cursor is not one this list gave", cursor=cursor[:40]) from None
