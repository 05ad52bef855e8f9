"""Constrained types every API shape and every path and query parameter uses, so that what the database cannot
store, or Python cannot convert, is refused as a 422 where it enters rather than failing deeper as a 500.

- ``Id``: an identifier, 1 .. 2^63-1 (a 64-bit column); ``StrictId`` in bodies (a JSON number, never a string).
- ``Text``: a string without NUL (PostgreSQL refuses it in text) or lone surrogates
  (not encodable as UTF-8).
- ``Instant``: an ISO 8601 date-time string with its UTC offset (numbers are not dates), within years 1000..8999
  once in UTC, so that converting it to UTC, and the arithmetic of a period around it, cannot overflow.
- Booleans are strict everywhere, as amounts are: a JSON body takes ``true`` and ``false`` only (``StrictBool``), a
  query parameter the words ``true`` and ``false`` only (``QueryBool``). Anything else (``1``, ``"yes"``, ``on``) is a
  422 ``invalid_request``, never read as a yes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StrictBool

MAX_BIGINT = 2**63 - 1

Id = Annotated[int, Field(ge=1, le=MAX_BIGINT)]
StrictId = Annotated[int, Field(strict=True, ge=1, le=MAX_BIGINT)]
# A 64-bit integer that may be zero (an "after" position, a threshold).
NonNegativeBigInt = Annotated[int, Field(ge=0, le=MAX_BIGINT)]


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_storable_text)]


_ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})$")
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _iso_string(value: Any) -> Any:
    if isinstance(value, datetime):  # from Python callers, already a datetime
        return value
    if not isinstance(value, str) or not _ISO_8601.match(value):
        raise ValueError("must be an ISO 8601 date-time with a UTC offset, e.g. 2026-01-31T12:00:00Z")
    return value


def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"must lie between {EARLIEST.date()} and {LATEST.date()} (UTC)")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_iso_string), AfterValidator(_in_range)]


def _query_bool(value: Any) -> Any:
    if value is True or value is False:
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError("must be true or false")


QueryBool = Annotated[bool, BeforeValidator(_query_bool)]

__all__ = ["MAX_BIGINT", "Id", "Instant", "NonNegativeBigInt", "QueryBool", "StrictBool", "StrictId", "Text"]
