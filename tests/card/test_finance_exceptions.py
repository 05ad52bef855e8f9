"""The finance exceptions queue both rails report into."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.errors import CreditrailError
from services.review.service import close_exception, get_exception, list_exceptions, raise_exception


def test_an_exception_is_raised_once_per_rail_kind_and_reference(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        first = raise_exception(
            session, rail="card", kind="unknown_purchase", reference="cs_1", details={"a": 1}, amount_cents=500
        )
        again = raise_exception(session, rail="card", kind="unknown_purchase", reference="cs_1", details={"a": 2})
        other = raise_exception(session, rail="usdc", kind="unknown_purchase", reference="cs_1", details={})
    assert first == again != other
    with unit_of_work(engine) as session:
        found = get_exception(session, first)
        assert (found.status, found.details, found.amount_cents) == ("open", {"a": 1}, 500)
        assert [e.id for e in list_exceptions(session)] == [first, other]
        assert [e.id for e in list_exceptions(session, rail="usdc")] == [other]


def test_closing_an_exception_records_who_and_what(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        item = raise_exception(session, rail="card", kind="amount_mismatch", reference="cs_2", details={})
    with unit_of_work(engine) as session:
        closed = close_exception(session, item, status="resolved", resolved_by="finance:1", resolution="refunded")
    assert closed.status == "resolved"
    assert closed.resolved_by == "finance:1"
    assert closed.resolved_at is not None
    with unit_of_work(engine) as session:
        assert list_exceptions(session, "open") == []
        assert [e.id for e in list_exceptions(session, "resolved")] == [item]
        with pytest.raises(CreditrailError) as refused:
            close_exception(session, item, status="ignored", resolved_by="x", resolution="y")
        assert refused.value.code == "finance_exception_closed"
        for status, resolution in (("open", "x"), ("resolved", " ")):
            with pytest.raises(CreditrailError):
                close_exception(session, item, status=status, resolved_by="x", resolution=resolution)
