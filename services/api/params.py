"""Request parameter types shared by every domain's endpoints.

Booleans are strict everywhere, as amounts are: a JSON body takes ``true`` and ``false`` only (pydantic's
``StrictBool``), and a query parameter the words ``true`` and ``false`` only. Anything else (``1``, ``"yes"``,
``on``) is a 422 ``invalid_request``, never read as a yes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, StrictBool

__all__ = ["QueryBool", "StrictBool"]


def _query_bool(value: Any) -> Any:
    if value is True or value is False:
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError("must be true or false")


QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
