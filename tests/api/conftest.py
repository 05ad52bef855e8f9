"""An app per test on the test's database, with an admin key, a customer account with credits, and its key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.apikeys.service import issue_key
from services.app.app import create_app
from services.app.models import metadata
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger.accounts import create_customer_account
from services.ledger.minting import mint
from services.ledger.system_accounts import SystemAccount


@dataclass
class Customer:
    account_id: int
    key_id: int
    headers: dict[str, str]


@dataclass
class Api:
    client: TestClient
    engine: Engine
    admin: dict[str, str]

    def customer(self, name: str = "acme", credits: int = 10_000) -> Customer:
        with unit_of_work(self.engine) as session:
            account_id = create_customer_account(session, name=name)
            issued = issue_key(session, role="customer", account_id=account_id)
            if credits:
                mint(
                    session,
                    account_id=account_id,
                    amount_credits=credits,
                    rail="card",
                    external_ref=f"cs_test_{name}",
                    funding_account_id=SystemAccount.FUNDING_CARD,
                    cost_basis_cents=credits,
                )
        return Customer(account_id, issued.id, {"Authorization": f"Bearer {issued.key}"})

    def snapshot(self) -> dict[str, int]:
        """Row counts of every table, and the sum of every amount column: a refused request changes none."""
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for table in metadata.sorted_tables:
                out[table.name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
                for column in table.columns:
                    if column.name.endswith("_credits"):
                        total = conn.execute(select(func.coalesce(func.sum(column), 0))).scalar_one()
                        out[f"{table.name}.{column.name}"] = int(total)
        return out


@pytest.fixture
def api(engine: Engine) -> Iterator[Api]:
    app = create_app(Settings(environment="test", database_url=str(engine.url)), engine=engine)
    with unit_of_work(engine) as session:
        admin = issue_key(session, role="admin", account_id=None, name="root")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, engine, {"Authorization": f"Bearer {admin.key}"})
