"""Stripe's JSON, read and written without losing a digit.

Stripe sends some values as decimal strings (``currency_conversion.fx_rate``, ``unit_amount_decimal`` ...) and some
as JSON numbers with a fraction (``exchange_rate``). Its SDK turns the first into :class:`~decimal.Decimal`, which
``json.dumps`` refuses, and the second into ``float``, which keeps at most 17 significant digits. What we store of
Stripe's objects (the inbox's events, finance's mirror) is therefore decoded from the raw text Stripe answered with
(:func:`loads`: fractions become ``Decimal`` with every digit, decimal strings stay strings) and written back with
:func:`dumps`, which writes a ``Decimal`` as the exact number it holds. No float is involved either way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

_encode_str = json.encoder.encode_basestring_ascii
# Built once: ``json.loads`` with an option builds a decoder on every call (a quarter of a small event's parse).
_decoder = json.JSONDecoder(parse_float=Decimal)


def loads(text: str | bytes) -> Any:
    """JSON text as Python values: numbers with a fraction or an exponent as ``Decimal`` (never ``float``)."""
    if isinstance(text, bytes):
        return json.loads(text, parse_float=Decimal)
    return _decoder.decode(text)


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON for ``value``: a ``Decimal`` is written as the number it holds, digit for digit (a float, which
    only a caller's own value can be, as Python's shortest exact form). Raises ``TypeError`` for anything else that
    JSON cannot hold, and ``ValueError`` for a value that is not a finite number."""
    parts: list[str] = []
    _write(value, parts, sort_keys)
    return "".join(parts)


def _write(value: Any, out: list[str], sort_keys: bool) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        out.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        out.append(float.__repr__(value))
    elif isinstance(value, Mapping):
        items = sorted(value.items()) if sort_keys else list(value.items())
        out.append("{")
        for index, (key, item) in enumerate(items):
            if not isinstance(key, str):
                raise TypeError(f"a JSON object's keys are strings, not {type(key).__name__}")
            if index:
                out.append(",")
            out.append(_encode_str(key))
            out.append(":")
            _write(item, out, sort_keys)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out, sort_keys)
        out.append("]")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
