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


def test_the_page_reads_every_list_from_its_page_envelope(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    script = PAGE.read_text()
    calls = re.findall(r'const (\w+) = await api\("(/v1/[a-z0-9/_-]*[a-z0-9_-])"\);', script)
    lists = []
    for name, path in calls:
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        shape = schema["components"]["schemas"][ok["$ref"].rsplit("/", 1)[1]]
        if "has_more" in shape["properties"]:
            lists.append(path)
            assert f"{name}.data" in script, f"the page reads {path} as something other than a page"
            assert not re.search(rf"\b{name}\.(length|map|forEach)\b|of {name}\)", script), path
    assert {"/v1/lots", "/v1/purchases", "/v1/transactions", "/v1/usdc/chains"} <= set(lists)
