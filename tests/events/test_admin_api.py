"""The webhooks' admin API (an admin or platform key): endpoints registered with a secret shown once, listed,
changed, disabled and given a new secret; each endpoint's delivery log with every attempt; a resend; events looked up;
bad input refused with a code and nothing written."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.apikeys.service import issue_key
from services.app.app import create_app
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.events import repository as repo
from services.events.errors import InvalidWebhookUrl
from services.events.service import check_url
from services.events.signing import verify
from services.ledger.accounts import create_customer_account
from tests.events.conftest import Hooks, hook_settings
from tests.events.receiver import Receiver


@dataclass
class Admin:
    client: TestClient
    hooks: Hooks
    admin: dict[str, str]
    platform: dict[str, str]
    customer: dict[str, str]

    def create(self, url: str, event_types: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        body = {"url": url, "event_types": event_types or ["*"], **extra}
        response = self.client.post("/v1/admin/webhook-endpoints", json=body, headers=self.platform)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def counts(self) -> tuple[int, int]:
        with unit_of_work(self.hooks.engine) as session:
            return (
                session.execute(select(func.count()).select_from(repo.endpoints)).scalar_one(),
                session.execute(select(func.count()).select_from(repo.deliveries)).scalar_one(),
            )


@pytest.fixture
def admin(engine: Engine) -> Iterator[Admin]:
    settings = hook_settings(engine)
    app = create_app(settings, engine=engine)
    with unit_of_work(engine) as session:
        root = issue_key(session, role="admin", account_id=None, name="root")
        platform = issue_key(session, role="platform", account_id=None, name="platform")
        account_id = create_customer_account(session, name="someone")
        customer = issue_key(session, role="customer", account_id=account_id)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Admin(
            client,
            Hooks(engine, settings),
            {"Authorization": f"Bearer {root.key}"},
            {"Authorization": f"Bearer {platform.key}"},
            {"Authorization": f"Bearer {customer.key}"},
        )


def test_an_endpoint_is_registered_with_a_secret_shown_once(admin: Admin) -> None:
    created = admin.create("https://platform.example/hooks", ["purchase.completed", "credits.low"], description="main")
    assert created["id"].startswith("we_")
    assert created["secret"].startswith("whsec_")
    assert (created["url"], created["event_types"], created["description"], created["enabled"]) == (
        "https://platform.example/hooks",
        ["purchase.completed", "credits.low"],
        "main",
        True,
    )
    one = admin.client.get(f"/v1/admin/webhook-endpoints/{created['id']}", headers=admin.admin)
    assert one.status_code == 200
    assert "secret" not in one.json()
    listed = admin.client.get("/v1/admin/webhook-endpoints", headers=admin.platform).json()
    assert [item["id"] for item in listed["data"]] == [created["id"]]
    assert (listed["has_more"], listed["next_cursor"]) == (False, None)
    assert all("secret" not in item for item in listed["data"])


def test_endpoints_are_listed_in_pages(admin: Admin) -> None:
    ids = [admin.create(f"https://platform.example/{n}")["id"] for n in range(3)]
    first = admin.client.get("/v1/admin/webhook-endpoints?limit=2", headers=admin.platform).json()
    assert [item["id"] for item in first["data"]] == ids[:2]
    assert first["has_more"]
    rest = admin.client.get(
        f"/v1/admin/webhook-endpoints?limit=2&cursor={first['next_cursor']}", headers=admin.platform
    ).json()
    assert [item["id"] for item in rest["data"]] == ids[2:]
    assert not rest["has_more"]


def test_an_endpoint_is_changed_disabled_and_given_a_new_secret(admin: Admin, receiver: Receiver) -> None:
    created = admin.create("https://platform.example/hooks")
    path = f"/v1/admin/webhook-endpoints/{created['id']}"
    changed = admin.client.patch(
        path, json={"url": receiver.url, "event_types": ["deposit.credited"], "description": None}, headers=admin.admin
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["url"], changed.json()["event_types"], changed.json()["description"]) == (
        receiver.url,
        ["deposit.credited"],
        None,
    )
    disabled = admin.client.patch(path, json={"enabled": False}, headers=admin.admin)
    assert (disabled.json()["enabled"], disabled.json()["url"]) == (False, receiver.url)
    rotated = admin.client.post(f"{path}/rotate-secret", headers=admin.platform)
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]
    admin.client.patch(path, json={"enabled": True, "event_types": ["*"]}, headers=admin.admin)
    admin.hooks.event(admin.hooks.account(), "purchase.completed:lot:1")
    assert admin.hooks.deliver() == 1
    [request] = receiver.received
    header = request.headers["Creditrail-Signature"]
    assert verify(request.body, header, rotated.json()["secret"])
    assert not verify(request.body, header, created["secret"])


def test_the_delivery_log_shows_each_attempt_and_a_resend_sends_again(admin: Admin, receiver: Receiver) -> None:
    receiver.behaviour.statuses = deque([503])
    created = admin.create(receiver.url)
    event = admin.hooks.event(admin.hooks.account(), "purchase.completed:lot:1")
    assert admin.hooks.deliver() == 1
    log = admin.client.get(f"/v1/admin/webhook-endpoints/{created['id']}/deliveries", headers=admin.platform).json()
    [delivery] = log["data"]
    assert (delivery["event_id"], delivery["event_type"], delivery["endpoint_id"]) == (
        event.public_id,
        "purchase.completed",
        created["id"],
    )
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("pending", 1, 503)
    assert delivery["next_attempt_at"] is not None
    [attempt] = delivery["attempt_log"]
    assert (attempt["status_code"], attempt["error"], attempt["response_excerpt"]) == (
        503,
        "the endpoint answered HTTP 503",
        "ok",
    )
    assert attempt["duration_ms"] >= 0
    resent = admin.client.post(f"/v1/admin/webhook-deliveries/{delivery['id']}/resend", headers=admin.platform)
    assert resent.status_code == 202, resent.text
    assert resent.json()["status"] == "pending"
    assert admin.hooks.deliver() == 1
    log = admin.client.get(f"/v1/admin/webhook-endpoints/{created['id']}/deliveries", headers=admin.platform).json()
    [delivered] = log["data"]
    assert (delivered["status"], delivered["next_attempt_at"]) == ("delivered", None)
    assert [a["status_code"] for a in delivered["attempt_log"]] == [503, 200]
    missing = admin.client.post("/v1/admin/webhook-deliveries/999999/resend", headers=admin.platform)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "webhook_delivery_not_found")


def test_events_are_looked_up_by_account_type_and_id(admin: Admin) -> None:
    first, second = admin.hooks.account("one"), admin.hooks.account("two")
    a = admin.hooks.event(first, "purchase.completed:lot:1")
    b = admin.hooks.event(second, "purchase.completed:lot:2")
    c = admin.hooks.event(first, "purchase.completed:lot:3")
    everything = admin.client.get("/v1/admin/events", headers=admin.platform).json()
    assert [item["id"] for item in everything["data"]] == [c.public_id, b.public_id, a.public_id]
    mine = admin.client.get(f"/v1/admin/events?account_id={first}&type=purchase.completed", headers=admin.admin)
    assert [item["id"] for item in mine.json()["data"]] == [c.public_id, a.public_id]
    none = admin.client.get("/v1/admin/events?type=credits.low", headers=admin.admin).json()
    assert none["data"] == []
    paged = admin.client.get("/v1/admin/events?limit=2", headers=admin.admin).json()
    rest = admin.client.get(f"/v1/admin/events?limit=2&cursor={paged['next_cursor']}", headers=admin.admin).json()
    assert [item["id"] for item in rest["data"]] == [a.public_id]
    one = admin.client.get(f"/v1/admin/events/{a.public_id}", headers=admin.platform).json()
    assert one == {
        "id": a.public_id,
        "type": "purchase.completed",
        "account_id": first,
        "created_at": one["created_at"],
        "data": {"lot_id": 7, "amount_credits": 1_000},
    }
    missing = admin.client.get("/v1/admin/events/evt_nothing", headers=admin.platform)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "event_not_found")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"url": "ftp://platform.example/hooks", "event_types": ["*"]}, 400, "invalid_webhook_url"),
        ({"url": "https://user:pass@platform.example/hooks", "event_types": ["*"]}, 400, "invalid_webhook_url"),
        ({"url": "/relative", "event_types": ["*"]}, 400, "invalid_webhook_url"),
        ({"url": "https://platform.example/h\u00e9", "event_types": ["*"]}, 400, "invalid_webhook_url"),
        ({"url": "https://platform.example/hooks", "event_types": ["purchase.done"]}, 400, "unknown_event_type"),
        ({"url": "https://platform.example/hooks", "event_types": []}, 422, None),
        ({"url": "https://platform.example/hooks"}, 422, None),
        ({"url": "https://platform.example/hooks", "event_types": ["*"], "secret": "mine"}, 422, None),
        ({"url": "https://platform.example/hooks", "event_types": "*"}, 422, None),
    ],
)
def test_bad_input_is_refused_with_a_code_and_nothing_written(
    admin: Admin, body: dict[str, Any], status: int, code: str | None
) -> None:
    before = admin.counts()
    response = admin.client.post("/v1/admin/webhook-endpoints", json=body, headers=admin.platform)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
    assert admin.counts() == before


def test_a_change_with_bad_input_is_refused_and_changes_nothing(admin: Admin) -> None:
    created = admin.create("https://platform.example/hooks", ["purchase.completed"])
    path = f"/v1/admin/webhook-endpoints/{created['id']}"
    for body, status, code in (
        ({"url": None}, 422, "invalid_request"),
        ({"enabled": None}, 422, "invalid_request"),
        ({"enabled": "yes"}, 422, None),
        ({"url": "gopher://platform.example"}, 400, "invalid_webhook_url"),
        ({"url": "https://platform.example/new", "event_types": ["nope"]}, 400, "unknown_event_type"),
    ):
        response = admin.client.patch(path, json=body, headers=admin.platform)
        assert response.status_code == status, (body, response.text)
        if code is not None:
            assert response.json()["error"]["code"] == code
    unchanged = admin.client.get(path, headers=admin.platform).json()
    assert (unchanged["url"], unchanged["event_types"]) == ("https://platform.example/hooks", ["purchase.completed"])
    for method, url in (
        ("GET", "/v1/admin/webhook-endpoints/we_nothing"),
        ("PATCH", "/v1/admin/webhook-endpoints/we_nothing"),
        ("POST", "/v1/admin/webhook-endpoints/we_nothing/rotate-secret"),
        ("GET", "/v1/admin/webhook-endpoints/we_nothing/deliveries"),
    ):
        response = admin.client.request(method, url, json={} if method == "PATCH" else None, headers=admin.platform)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "webhook_endpoint_not_found")


def test_only_admin_and_platform_keys_manage_webhooks(admin: Admin) -> None:
    before = admin.counts()
    body = {"url": "https://platform.example/hooks", "event_types": ["*"]}
    refused = admin.client.post("/v1/admin/webhook-endpoints", json=body, headers=admin.customer)
    assert refused.status_code == 403
    assert admin.client.get("/v1/admin/events", headers=admin.customer).status_code == 403
    assert admin.client.get("/v1/admin/webhook-endpoints").status_code == 401
    assert admin.counts() == before


def test_production_wants_https_endpoints(engine: Engine) -> None:
    production = Settings(environment="test", database_url=str(engine.url)).model_copy(
        update={"environment": "production"}
    )
    assert check_url(production, "https://platform.example/hooks") == "https://platform.example/hooks"
    with pytest.raises(InvalidWebhookUrl):
        check_url(production, "http://platform.example/hooks")
