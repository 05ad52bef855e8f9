"""The OpenAPI document says every header and error each operation really has, with the one error body."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from services.api.deps import CustomerKey
from services.api.guard import json_depth_exceeds
from tests.api.conftest import Api

IDEMPOTENT = {
    ("post", "/v1/charges"),
    ("post", "/v1/holds"),
    ("post", "/v1/admin/accounts/{account_id}/grants"),
    ("post", "/v1/admin/accounts/{account_id}/adjustments"),
    ("post", "/v1/card/purchases"),
}
ERROR_REF = "#/components/schemas/ErrorOut"
# Endpoints that need no key: a webhook that proves itself by its signature, x402's purchases and claims (the payment
# proves itself), and a wallet's sign-in.
PUBLIC = {
    "/v1/stripe/webhook",
    "/v1/x402/credits",
    "/v1/x402/credits/claims",
    "/v1/wallets/siwx/nonce",
    "/v1/wallets/siwx",
}


def _operations(api: Api) -> tuple[dict[str, Any], list[tuple[str, str, dict[str, Any]]]]:
    schema = api.client.get("/openapi.json").json()
    found = [(method, path, op) for path, item in schema["paths"].items() for method, op in item.items()]
    return schema, found


def _errors(operation: dict[str, Any]) -> set[int]:
    statuses = set()
    for status, response in operation["responses"].items():
        if int(status) >= 400:
            assert response["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, status
            statuses.add(int(status))
    return statuses


def test_idempotency_key_is_a_required_header_exactly_where_it_is_required(api: Api) -> None:
    _, operations = _operations(api)
    declared = set()
    for method, path, operation in operations:
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "header" and parameter["name"] == "Idempotency-Key":
                assert parameter["required"] is True
                declared.add((method, path))
    assert declared == IDEMPOTENT
    for method, path in IDEMPOTENT:
        concrete = path.replace("{account_id}", "1")
        response = api.client.request(method, concrete, json={}, headers=api.admin)
        assert response.status_code in (403, 422), concrete


def test_every_error_is_declared_with_the_error_body(api: Api) -> None:
    schema, operations = _operations(api)
    assert schema["components"]["schemas"]["ErrorOut"]["required"] == ["error"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    by_operation = {(method, path): _errors(operation) for method, path, operation in operations}
    for (method, path), errors in by_operation.items():
        if path.startswith("/v1/") and path not in PUBLIC:
            assert {401, 403} <= errors, (method, path)
    assert {401, 402, 403, 409, 413, 422} <= by_operation[("post", "/v1/charges")]
    assert {401, 403, 404, 409, 422} <= by_operation[("post", "/v1/holds/{hold_id}/capture")]
    assert {409, 502, 504} <= by_operation[("post", "/v1/card/purchases")]
    assert {409, 502, 504} <= by_operation[("post", "/v1/finance/reconciliations")]
    assert {409} <= by_operation[("post", "/v1/admin/api-keys/{key_id}/revoke")]
    assert {400, 413, 422} <= by_operation[("post", "/v1/stripe/webhook")]
    assert 401 not in by_operation[("post", "/v1/stripe/webhook")]
    assert {400, 404, 409, 422, 502} <= by_operation[("post", "/v1/x402/credits/claims")]
    assert 401 not in by_operation[("post", "/v1/x402/credits/claims")]
    assert {400, 401, 413, 422} <= by_operation[("post", "/v1/wallets/siwx")]
    assert {400, 413, 422} <= by_operation[("post", "/v1/wallets/siwx/nonce")]


def test_every_list_answers_the_page_envelope(api: Api) -> None:
    schema, operations = _operations(api)
    lists = []
    for method, path, operation in operations:
        ok = operation["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
        ref = ok.get("$ref") or ""
        properties = schema["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
        if properties.get("data", {}).get("type") == "array":
            assert {"has_more", "next_cursor"} <= set(properties), path
            lists.append(path)
            # Lists bounded by the configuration (chains, jobs, an account's one address per chain) come whole.
            bounded = (
                "/v1/usdc/chains",
                "/v1/admin/jobs",
                "/v1/admin/usdc/chains",
                "/v1/admin/accounts/{account_id}/usdc/addresses",
            )
            if method == "get" and path not in bounded:
                names = {parameter["name"] for parameter in operation.get("parameters", [])}
                assert {"cursor", "limit"} <= names, path
        assert ok.get("type") != "array", f"{method} {path} answers a bare list"
    assert len(lists) >= 13


@pytest.mark.parametrize(
    ("body", "too_deep"),
    [
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b"[" * 100_000, True),  # never closed: the decoder would recurse all the same
        (b'{"a": "' + b"[" * 1_000 + b'"}', False),  # brackets in a string are text
        (b'{"a": "\\"' + b"[" * 1_000 + b'"}', False),  # after an escaped quote too
        (b"]" + b"[" * 1_000, False),  # a stray closer: the decoder stops at once
        (b"[]," * 10_000, False),
        (b'[{"a": [{"b": []}]}]', False),
    ],
)
def test_json_depth_is_measured_on_the_raw_bytes(body: bytes, too_deep: bool) -> None:
    assert json_depth_exceeds(body, 64) is too_deep


class Echo(BaseModel):
    value: object


later_router = APIRouter(prefix="/v1/later")


@later_router.post("/echo")
def echo(body: Echo, _principal: CustomerKey) -> Echo:
    return body


def test_a_router_included_after_the_app_was_built_is_guarded_too(api: Api) -> None:
    app = api.client.app
    assert isinstance(app, FastAPI)
    app.include_router(later_router)
    deep = b'{"value": ' + b"[" * 1_000 + b"]" * 1_000 + b"}"
    headers = {"Content-Type": "application/json"}
    refused = api.client.post("/v1/later/echo", content=deep, headers=headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthenticated")
    customer = api.customer()
    too_deep = api.client.post("/v1/later/echo", content=deep, headers={**headers, **customer.headers})
    assert (too_deep.status_code, too_deep.json()["error"]["code"]) == (422, "json_too_deep")
    assert api.client.post("/v1/later/echo", json={"value": [1]}, headers=customer.headers).json() == {"value": [1]}
