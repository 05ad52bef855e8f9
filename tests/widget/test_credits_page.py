"""The credits page and widget over HTTP: /credits (and Stripe's success and cancel pages) under a strict content
security policy with no inline script or style; the widget's files with a short cache and ETags; the development
demo page only in development and test; CORS for the API only, for the widget's listed origins; every API path the
component calls exists with the method it uses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlalchemy.engine import Engine

from services.app.app import create_app
from services.core.settings import Settings
from services.widget.endpoints import STATIC
from tests.api.conftest import Api

SCRIPT = (STATIC / "credits.js").read_text()
PLATFORM = "https://platform.example"


@contextmanager
def _client(engine: Engine, **values: Any) -> Iterator[TestClient]:
    defaults: dict[str, Any] = {
        "environment": "test",
        "receipt_link_secret": SecretStr("receipt-links-0123456789abcdef-0123456789"),
    }
    settings = Settings(database_url=str(engine.url), **(defaults | values))
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def production(engine: Engine) -> Iterator[TestClient]:
    with _client(
        engine,
        environment="production",
        public_base_url="https://credits.example.com",
        widget_origins=[PLATFORM],
    ) as client:
        yield client


@pytest.mark.parametrize(
    "path", ["/credits", "/credits/purchase-complete?purchase_id=1", "/credits/purchase-cancelled"]
)
def test_the_page_is_served_with_a_csp_that_allows_no_inline_script_or_style(api: Api, path: str) -> None:
    response = api.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    html = response.text
    assert '<creditrail-credits mode="page">' in html
    assert '<script src="/widget.js" defer></script>' in html
    assert '<link rel="stylesheet" href="/widget.css">' in html
    # Nothing the policy would block: no inline script, no style element or attribute, no handler attribute.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)


def test_the_page_finds_its_files_under_the_public_base_path(engine: Engine) -> None:
    with _client(engine, public_base_url="https://example.com/billing") as client:
        html = client.get("/credits").text
        assert '<script src="/billing/widget.js" defer></script>' in html
        assert '<link rel="stylesheet" href="/billing/widget.css">' in html


@pytest.mark.parametrize(("path", "media"), [("/widget.js", "text/javascript"), ("/widget.css", "text/css")])
def test_the_widget_files_are_cached_briefly_and_revalidated(api: Api, path: str, media: str) -> None:
    response = api.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["x-content-type-options"] == "nosniff"
    etag = response.headers["etag"]
    again = api.client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert api.client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_the_component_has_no_inline_style_for_a_csp_to_block() -> None:
    # Markup it writes (the panel's template and what it builds) carries no style attribute, and it sets no
    # style property: the stylesheet does all of it.
    assert not re.search(r"\sstyle=", SCRIPT)
    assert ".style." not in SCRIPT
    assert "eval(" not in SCRIPT
    assert "new Function" not in SCRIPT


def test_the_demo_page_is_served_in_development_and_test_only(api: Api, production: TestClient) -> None:
    demo = api.client.get("/dev/widget-demo")
    assert demo.status_code == 200
    assert '<creditrail-credits id="credits" mode="badge">' in demo.text
    assert "unsafe-inline" not in demo.headers["content-security-policy"]
    assert api.client.get("/dev/widget-demo.js").status_code == 200
    assert production.get("/dev/widget-demo").status_code == 404
    assert production.get("/dev/widget-demo.js").status_code == 404
    assert production.get("/widget.js").status_code == 200


def _preflight(client: TestClient, origin: str, path: str = "/v1/balance") -> dict[str, str]:
    response = client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    return {"status": str(response.status_code), **{k.lower(): v for k, v in response.headers.items()}}


def test_cors_preflight_is_allowed_for_a_listed_origin_without_credentials(production: TestClient) -> None:
    allowed = _preflight(production, PLATFORM, "/v1/card/purchases")
    assert allowed["status"] == "200"
    assert allowed["access-control-allow-origin"] == PLATFORM
    assert "authorization" in allowed["access-control-allow-headers"].lower()
    assert "idempotency-key" in allowed["access-control-allow-headers"].lower()
    assert "POST" in allowed["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed
    # A real request from it is answered with the origin (and the replay header readable).
    response = production.get("/v1/balance", headers={"Origin": PLATFORM})
    assert response.status_code == 401  # no token: refused, but readable by the widget
    assert response.headers["access-control-allow-origin"] == PLATFORM
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1:5173", "https://platform.example.evil"])
def test_cors_preflight_is_refused_for_other_origins(production: TestClient, origin: str) -> None:
    refused = _preflight(production, origin)
    assert refused["status"] == "400"
    assert "access-control-allow-origin" not in refused
    response = production.get("/v1/balance", headers={"Origin": origin})
    assert "access-control-allow-origin" not in response.headers


def test_cors_is_for_the_api_only(production: TestClient) -> None:
    for path in ("/credits", "/widget.js", "/healthz"):
        response = production.get(path, headers={"Origin": PLATFORM})
        assert "access-control-allow-origin" not in response.headers, path


def test_cors_in_development_and_test_allows_local_pages_unless_origins_are_listed(api: Api, engine: Engine) -> None:
    for origin in ("http://localhost:3000", "http://127.0.0.1:8123", "http://localhost"):
        assert _preflight(api.client, origin)["access-control-allow-origin"] == origin
    for origin in ("https://localhost:3000", "http://localhost.evil:3000", "http://10.0.0.1:3000"):
        assert "access-control-allow-origin" not in _preflight(api.client, origin)
    with _client(engine, widget_origins=[PLATFORM]) as client:
        assert "access-control-allow-origin" not in _preflight(client, "http://localhost:3000")
        assert _preflight(client, PLATFORM)["access-control-allow-origin"] == PLATFORM


def test_cors_in_production_allows_nothing_unless_listed(engine: Engine) -> None:
    with _client(engine, environment="production", public_base_url="https://credits.example.com") as client:
        assert "access-control-allow-origin" not in _preflight(client, "http://localhost:3000")
        assert "access-control-allow-origin" not in _preflight(client, PLATFORM)


@pytest.mark.parametrize(
    "origin", ["platform.example", "https://platform.example/app", "ftp://platform.example", "https://*.example"]
)
def test_a_widget_origin_must_be_an_origin(origin: str) -> None:
    with pytest.raises(ValidationError):
        Settings(widget_origins=[origin])
    assert Settings(widget_origins=["https://Platform.example:8443/"]).widget_origins == [
        "https://platform.example:8443"
    ]


def test_every_api_call_of_the_component_exists(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    # Calls with a fixed path (those that build a path from an id are checked by name below).
    called = set(re.findall(r'(?:api\(|path: )"(/v1/[a-z0-9/_-]*[a-z0-9_-])[?"]', SCRIPT))
    assert called >= {
        "/v1/balance",
        "/v1/lots",
        "/v1/purchases",
        "/v1/transactions",
        "/v1/card/packs",
        "/v1/card/purchases",
        "/v1/card/auto-recharge",
        "/v1/usdc/chains",
        "/v1/usdc/deposit-address",
        "/v1/usdc/deposits",
        "/v1/budgets",
        "/v1/session",
        "/v1/session/logout",
    }
    # The alerts endpoint is another piece of work's: the component hides its form while the server has none.
    for path in called - {"/v1/account/alerts"}:
        assert path in paths, f"the component calls {path}, which the API does not have"
    assert "/v1/card/purchases/{purchase_id}/confirm" in paths
    assert "patch" in paths["/v1/budgets/{budget_id}"]
    assert "put" in paths["/v1/card/auto-recharge"]


def test_the_component_reads_every_list_from_its_page_envelope(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    # The GET calls (no options), whose answer the component keeps in a variable.
    calls = re.findall(r'const (\w+) = await this\.api\("(/v1/[a-z0-9/_-]*[a-z0-9_-])(?:"\)|\?)', SCRIPT)
    lists = []
    for name, path in calls:
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        shape = schema["components"]["schemas"][ok["$ref"].rsplit("/", 1)[1]]
        if "has_more" in shape["properties"]:
            lists.append(path)
            assert f"{name}.data" in SCRIPT, f"the component reads {path} as something other than a page"
    assert {"/v1/usdc/chains", "/v1/usdc/deposits", "/v1/budgets"} <= set(lists)
    # The paged histories go through one pager, which reads data, has_more and next_cursor.
    assert "page.next_cursor" in SCRIPT
    assert "page.has_more" in SCRIPT


def test_the_balance_says_what_the_available_credits_are_worth_in_cents(api: Api) -> None:
    customer = api.customer(credits=1_234)
    body = api.client.get("/v1/balance", headers=customer.headers).json()
    assert (body["available_credits"], body["available_cents"]) == (1_234, 1_234)
