"""The fault tests' stack (a private PostgreSQL server, anvil, the processes a test starts), closed after each
test; a failing test's report carries the tail of every process's log and of the server's."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.faults.support import FaultStack


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FaultStack]:
    built = FaultStack(tmp_path)
    request.node.fault_stack = built
    try:
        yield built
    finally:
        built.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    built = getattr(item, "fault_stack", None)
    if isinstance(built, FaultStack) and report.when == "call" and report.failed:
        report.sections.append(("process and server logs", built.report()))
    return report
