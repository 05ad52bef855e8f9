"""What every row shape has: a domain's ``rows.py`` types the rows its repository returns with a Protocol per shape
(the columns its select returns, with their types) built on ``RowShape``. The rows themselves are SQLAlchemy's, as
they come from the database: no copy, no validation, read-only."""

from __future__ import annotations

from typing import Any, Protocol


class RowShape(Protocol):
    def _asdict(self) -> dict[str, Any]:
        """The row as a new dict, column name to value."""
        ...
