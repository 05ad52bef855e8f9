"""Stripe's form encoding, decoded: ``metadata[k]=v`` is a dict, ``line_items[0][quantity]=1`` a list of dicts,
``expand[0]=data.source`` (or ``expand[]=``) a list of strings, the way the SDK sends nested parameters."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    """A parameter name that is not Stripe's encoding."""


def _path(name: str) -> list[str]:
    matched = _KEY.match(name)
    if matched is None:
        raise FormError(f"Invalid parameter name: {name}")
    return [matched.group(1), *_PART.findall(matched.group(2))]


def _lists(node: Any) -> Any:
    """Dicts whose keys are all indexes (0, 1, ...) become lists, in index order."""
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(isinstance(key, str) and key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def decode(body: str) -> dict[str, Any]:
    """The nested parameters of a form-encoded body or query string."""
    root: dict[str, Any] = {}
    for name, value in parse_qsl(body, keep_blank_values=True):
        path = _path(name)
        node = root
        for index, part in enumerate(path[:-1]):
            following = path[index + 1]
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
            if following == "":
                # "expand[]=a&expand[]=b": appended in order.
                path[index + 1] = str(len(node))
        last = path[-1]
        if last in node and isinstance(node[last], dict):
            raise FormError(f"Invalid parameter: {name} mixes a value and nested fields")
        node[last] = value
    decoded: dict[str, Any] = _lists(root)
    return decoded
