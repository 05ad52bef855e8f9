"""The customer's credits page: served at /credits (and as Stripe's success and cancel pages) with a strict content
security policy, and every API path its script calls exists with the method it uses."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from services.api.credits_page import PAGE
from tests.api.conftest import Api


@pytest.mark.parametrize(
    "path", ["/credits", "/credits/purchase-complete?purchase_id=1", "/credits/purchase-cancelled"]
)
def test_the_page_is_served(api: Api, path: str) -> None:
    response = api.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "<h1>Credits</h1>" in response.text


def test_every_api_call_of_the_page_exists(api: Api) -> None:
    client: TestClient = api.client
    paths = client.get("/openapi.json").json()["paths"]
    script = PAGE.read_text()
    # Calls with a fixed path (those that build a path from an id are checked by name below).
    called = set(re.findall(r'api\("(/v1/[a-z0-9/_-]*[a-z0-9_-])"', script))
    assert called >= {"/v1/balance", "/v1/lots", "/v1/purchases", "/v1/transactions", "/v1/card/packs"}
    for path in called:
        assert path in paths, f"the page calls {path}, which the API does not have"
    assert "/v1/card/purchases/{purchase_id}/confirm" in paths
    assert "/v1/usdc/deposit-address" in paths
