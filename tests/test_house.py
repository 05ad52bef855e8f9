"""The house's rules, checked by reading the source tree (nothing is run).

- Only boundaries open units of work: a domain's ``endpoints.py`` (one request), ``tasks.py`` (one job's batch),
  ``cli.py`` (one command) and the modules under its ``flows/`` (functions that take an Engine and open short units
  of work around network calls); the top floor (``services/app/``) and the entry points; and the kit that makes those
  boundaries (``core/db.py``, the request's session in ``api/deps.py``, the request guard, the job runner). Every
  other module takes the caller's session and never commits, so "services never commit" is read off a file's name.
- Outside those boundaries a domain's functions take no Engine.
- No import circle, counting imports made inside functions too (none is left to dodge one).
- No circle between packages either: every arrow between two packages of ``services`` runs one way, downward (the
  HTTP kit, ``api/``, is below every domain and knows who calls only through ``api.principal.Keys`` and
  ``SignedRequests``; the outbox, below the rails, is told what a rail would say on a receipt). Entry points aside.
- The top floor is imported by nothing but the entry points.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import services

SERVICES = Path(services.__file__).parent

BOUNDARY_FILES = {"endpoints.py", "tasks.py", "cli.py"}
BOUNDARY_FOLDERS = {"flows", "app"}
BOUNDARY_KIT = {"core/db.py", "api/deps.py", "api/guard.py", "worker/runner.py", "cli.py", "dev.py"}
# Packages of infrastructure, not domains: they reach the database through an engine for their own ends (migrations,
# metrics, the worker's locks), never to move money.
INFRASTRUCTURE = {"core", "ops", "worker", "app", "api", "migrations", "stripe_standin"}
# Whoever may import the top floor: the entry points.
ENTRY_POINTS = {"cli.py", "worker/__main__.py", "migrations/env.py"}
OPENS_A_UNIT_OF_WORK = {"unit_of_work", "commit_without_waiting_for_disk", "commit"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SERVICES.rglob("*.py")):
        relative = path.relative_to(SERVICES).as_posix()
        if not relative.startswith("migrations/versions/"):
            yield relative, ast.parse(path.read_text(), filename=str(path))


def _is_boundary(relative: str) -> bool:
    parts = relative.split("/")
    return relative in BOUNDARY_KIT or parts[-1] in BOUNDARY_FILES or bool(BOUNDARY_FOLDERS.intersection(parts[:-1]))


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def test_only_boundaries_open_units_of_work() -> None:
    found = sorted(
        f"{relative}:{node.lineno} {_called_name(node)}()"
        for relative, tree in _modules()
        if not _is_boundary(relative)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _called_name(node) in OPENS_A_UNIT_OF_WORK
    )
    assert found == [], "units of work opened outside endpoints.py, tasks.py, cli.py and flows/"


def test_domain_functions_outside_flows_take_a_session_not_an_engine() -> None:
    found = sorted(
        f"{relative}:{node.lineno} {node.name}({argument.arg})"
        for relative, tree in _modules()
        if relative.split("/")[0] not in INFRASTRUCTURE and not _is_boundary(relative)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for argument in (*node.args.args, *node.args.kwonlyargs)
        if argument.annotation is not None and "Engine" in ast.unparse(argument.annotation)
    )
    assert found == []


def _module_of(relative: str) -> str:
    dotted = relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return f"services.{dotted}" if dotted != "__init__" else "services"


def _imports() -> dict[str, set[str]]:
    """Each module of services and the modules of services it imports, wherever in the file the import stands."""
    trees = dict(_modules())
    known = {_module_of(relative) for relative in trees}
    graph: dict[str, set[str]] = {}
    for relative, tree in trees.items():
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[_module_of(relative)] = {target for target in targets if target in known} - {_module_of(relative)}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def test_no_import_circle() -> None:
    assert _circles(_imports()) == []


def test_the_circle_finder_sees_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _package_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def _package_imports() -> dict[str, set[str]]:
    """Each package of services (a top-level module counts as one) and the packages it imports, entry points aside."""
    entry_points = {_module_of(relative) for relative in ENTRY_POINTS}
    graph: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        package = graph.setdefault(_package_of(module), set())
        if module not in entry_points:
            package.update(_package_of(target) for target in targets)
    return {package: targets - {package} for package, targets in graph.items()}


def test_no_circle_between_packages() -> None:
    assert _circles(_package_imports()) == []


def test_the_packages_named_in_the_house_rules_import_downward() -> None:
    graph = _package_imports()
    upward = [("api", "apikeys"), ("api", "wallets"), ("ledger", "apikeys"), ("outbox", "card"), ("api", "ledger")]
    assert [(low, high) for low, high in upward if high in graph[low]] == []


def test_only_entry_points_import_the_top_floor() -> None:
    graph = _imports()
    entry_points = {_module_of(relative) for relative in ENTRY_POINTS}
    found = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module not in entry_points and not module.startswith("services.app")
        for target in targets
        if target == "services.app" or target.startswith("services.app.")
    )
    assert found == []
