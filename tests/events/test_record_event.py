"""Recording an event: once per dedupe key, in the caller's transaction, with one pending delivery for each enabled
endpoint that wants its type."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.events import repository as repo
from services.events.models import DeliveryStatus, EventType
from services.events.service import record_event, wants
from services.ledger.accounts import create_customer_account


def _endpoint(engine: Engine, url: str, event_types: list[str], *, enabled: bool = True) -> int:
    with unit_of_work(engine) as session:
        return int(
            session.execute(
                repo.endpoints.insert()
                .values(
                    public_id=f"we_{url[-4:]}",
                    url=url,
                    secret="whsec_test",
                    event_types=event_types,
                    enabled=enabled,
                    created_at=utcnow(),
                )
                .returning(repo.endpoints.c.id)
            ).scalar_one()
        )


def test_an_event_is_recorded_once_with_a_delivery_per_wanting_endpoint(engine: Engine) -> None:
    everything = _endpoint(engine, "https://platform.test/all", ["*"])
    purchases = _endpoint(engine, "https://platform.test/buys", [EventType.PURCHASE_COMPLETED])
    _endpoint(engine, "https://platform.test/lows", [EventType.CREDITS_LOW])
    _endpoint(engine, "https://platform.test/gone", ["*"], enabled=False)
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="buyer")

    for _ in range(2):
        with unit_of_work(engine) as session:
            recorded = record_event(
                session,
                event_type=EventType.PURCHASE_COMPLETED,
                account_id=account_id,
                data={"lot_id": 7, "amount_credits": 1_000},
                dedupe_key="purchase.completed:lot:7",
                now=utcnow(),
            )
        assert recorded is (_ == 0)

    with unit_of_work(engine) as session:
        event = repo.event_by_key(session, "purchase.completed:lot:7")
        assert event is not None
        assert event.type == "purchase.completed"
        assert event.public_id.startswith("evt_")
        assert event.data == {"lot_id": 7, "amount_credits": 1_000}
        rows = session.execute(
            select(repo.deliveries.c.endpoint_id, repo.deliveries.c.status).where(
                repo.deliveries.c.event_id == event.id
            )
        ).all()
        assert sorted(rows) == sorted([(everything, DeliveryStatus.PENDING), (purchases, DeliveryStatus.PENDING)])
        assert session.execute(select(func.count()).select_from(repo.events)).scalar_one() == 1


def test_an_event_rolled_back_with_its_change_leaves_nothing(engine: Engine) -> None:
    _endpoint(engine, "https://platform.test/all", ["*"])
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="buyer")
    try:
        with unit_of_work(engine) as session:
            record_event(
                session,
                event_type=EventType.DEPOSIT_CREDITED,
                account_id=account_id,
                data={},
                dedupe_key="deposit.credited:lot:9",
                now=utcnow(),
            )
            raise RuntimeError("the change failed")
    except RuntimeError:
        pass
    with unit_of_work(engine) as session:
        assert session.execute(select(func.count()).select_from(repo.events)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(repo.deliveries)).scalar_one() == 0


def test_an_endpoint_wants_its_types_or_everything() -> None:
    assert wants(["*"], EventType.CREDITS_LOW)
    assert wants([EventType.CREDITS_LOW], EventType.CREDITS_LOW)
    assert not wants([EventType.PURCHASE_COMPLETED], EventType.CREDITS_LOW)
    assert not wants([], EventType.CREDITS_LOW)
