"""The app's routes as one flat table (full path, methods, the APIRoute), whatever way routers were included: the
request guard matches requests against it, the 405 handler lists a path's methods from it, and the OpenAPI
decoration walks it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi.routing import APIRoute
from starlette.routing import compile_path

# FastAPI keeps included routers as such from 0.165 on (and says how to walk them); earlier versions copy their
# routes into the app.
_iter_route_contexts: Any = getattr(fastapi.routing, "iter_route_contexts", None)


@dataclass(frozen=True)
class RouteEntry:
    path: str
    methods: frozenset[str]
    route: APIRoute
    regex: re.Pattern[str]
    # What the app serves the route through (FastAPI's effective route for an included router, or the route).
    served: Any

    def matches_path(self, path: str) -> bool:
        return self.regex.match(path) is not None


def _flat(app: Any) -> Iterator[tuple[str, frozenset[str], Any, Any]]:
    if _iter_route_contexts is not None:
        for context in _iter_route_contexts(app.routes):
            yield context.path or "", frozenset(context.methods or ()), context.original_route, context
    else:  # pragma: no cover - depends on the installed FastAPI
        for route in app.routes:
            yield getattr(route, "path", ""), frozenset(getattr(route, "methods", None) or ()), route, route


def api_routes(app: Any) -> list[RouteEntry]:
    """Every APIRoute of ``app``, with the path and methods it answers (kept on ``app.state``, built again when a
    route or router is added to the app)."""
    version = tuple(id(route) for route in app.routes)
    cached: tuple[tuple[int, ...], list[RouteEntry]] | None = getattr(app.state, "api_route_table", None)
    if cached is not None and cached[0] == version:
        return cached[1]
    table = [
        RouteEntry(path, methods, route, compile_path(path)[0], served)
        for path, methods, route, served in _flat(app)
        if isinstance(route, APIRoute)
    ]
    app.state.api_route_table = (version, table)
    return table


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method some route answers on ``path`` (HEAD with GET), sorted."""
    methods: set[str] = set()
    for entry in api_routes(app):
        if entry.matches_path(path):
            methods |= entry.methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)
