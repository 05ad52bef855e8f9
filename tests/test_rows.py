"""The row shapes (each domain's ``rows.py``) name only columns their tables have: a shape names in its docstring the
table it reads (``A row of ``card_purchases``.``), or the tables of a join, and lists their columns, or some of
them, and the labels it names in double backquotes, and nothing else; a whole row lists every column."""

from __future__ import annotations

import importlib
import inspect
import re

import services
from services.app.models import metadata
from services.core.rows import RowShape
from tests.test_house import SERVICES

TABLE_NAMED = re.compile(r"``(\w+)``")


def _shapes() -> list[tuple[str, type]]:
    found = []
    for path in sorted(SERVICES.rglob("rows.py")):
        module = importlib.import_module(
            ".".join((services.__name__, *path.relative_to(SERVICES).with_suffix("").parts))
        )
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and value is not RowShape
                and RowShape in value.__mro__
                and value.__module__ == module.__name__
            ):
                found.append((f"{module.__name__}.{name}", value))
    return found


def _names(shape: type) -> set[str]:
    """The attributes a shape declares, its bases' included."""
    return {name for klass in shape.__mro__ if klass is not RowShape for name in vars(klass).get("__annotations__", {})}


def test_every_shape_names_a_table_and_only_its_columns() -> None:
    shapes = _shapes()
    assert shapes
    wrong = []
    for name, shape in shapes:
        quoted = TABLE_NAMED.findall(shape.__doc__ or "")
        named = [table for table in quoted if table in metadata.tables]
        if not named:
            wrong.append(f"{name}: names no table")
            continue
        columns = {column.name for table in named for column in metadata.tables[table].columns}
        extra = sorted(_names(shape) - columns - set(quoted))
        if extra:
            wrong.append(f"{name}: {', '.join(named)} have no {extra}")
    assert wrong == []


def test_a_shape_that_says_it_is_a_whole_row_has_every_column() -> None:
    missing = []
    for name, shape in _shapes():
        doc = shape.__doc__ or ""
        if doc.startswith("A row of ``"):
            table = TABLE_NAMED.findall(doc)[0]
            absent = sorted({column.name for column in metadata.tables[table].columns} - _names(shape))
            if absent:
                missing.append(f"{name}: lacks {absent}")
    assert missing == []
