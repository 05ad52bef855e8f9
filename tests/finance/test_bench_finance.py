"""The finance benchmark runs end to end on a small data set, finds exactly the discrepancies it injected, and
prints its one JSON line (the figures themselves are the benchmark's business, not a test's)."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from scripts import bench_finance
from tests.conftest import POSTGRES_URL


def test_bench_finance_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    schema = f"bench_finance_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    assert bench_finance.main(["--database-url", POSTGRES_URL, "--records", "2000", "--schema", schema]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["discrepancies_found_as_injected"] is True
    assert line["items"] == {
        "missing_in_ledger": 2,
        "missing_externally": 2,
        "amount_mismatch": 2,
        "matched": 1_994,
        "late": 0,
    }
    assert line["rows_reconciled"] == 3_996
