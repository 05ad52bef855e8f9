"""Request booleans are strict everywhere, as amounts are: JSON ``true``/``false`` in a body, the words ``true`` and
``false`` in a query; ``"yes"``, ``"on"``, ``1`` and friends are a 422 ``invalid_request`` that writes nothing."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from sqlalchemy.engine import Engine

from services.app.app import create_app
from services.core.settings import Settings
from tests.card.conftest import Card, make_card

LOOSE_TRUTHS: list[Any] = ["yes", "on", 1, "1", "true", "True", "y", "t"]


@pytest.fixture
def card(engine: Engine) -> Iterator[Card]:
    yield from make_card(engine)


def test_save_card_takes_json_booleans_only(card: Card) -> None:
    customer = card.customer()
    before = card.snapshot()
    for value in LOOSE_TRUTHS:
        response = card.buy(customer, save_card=value)
        assert response.status_code == 422, (value, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
        assert response.json()["error"]["details"]["errors"][0]["loc"] == ["body", "save_card"]
    assert card.snapshot() == before
    assert card.stripe.requests == []


def test_save_card_true_is_still_taken(card: Card) -> None:
    purchase = card.bought(card.customer(), save_card=True)
    assert purchase["save_card"] is True
    [created] = card.stripe.sent("POST", "/v1/checkout/sessions")
    assert created.params["payment_intent_data[setup_future_usage]"] == "off_session"


def test_auto_recharge_enabled_takes_json_booleans_only(card: Card) -> None:
    customer = card.customer()
    before = card.snapshot()
    for value in [*LOOSE_TRUTHS, 0, "no", "off", "false"]:
        response = card.client.put(
            "/v1/card/auto-recharge",
            json={"enabled": value, "threshold_credits": 100, "pack": "starter"},
            headers=customer.headers,
        )
        assert response.status_code == 422, (value, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    assert card.snapshot() == before


def test_include_spent_takes_true_or_false_only(card: Card) -> None:
    customer = card.customer(credits=500)
    for value in ["1", "yes", "on", "True", "0", "no", "off"]:
        response = card.client.get("/v1/lots", params={"include_spent": value}, headers=customer.headers)
        assert response.status_code == 422, (value, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    for word in ("true", "false"):
        assert card.client.get("/v1/lots", params={"include_spent": word}, headers=customer.headers).status_code == 200


def _bools_in(annotation: Any) -> bool:
    if annotation is bool:
        return True
    if get_origin(annotation) in (Union, types.UnionType, list, Annotated):
        return any(_bools_in(arg) for arg in get_args(annotation))
    return False


def _accepts_loose_truth(annotation: Any, field: FieldInfo, *, in_query: bool) -> bool:
    # The field's type with its constraints (Strict, validators), as its model or FastAPI validates it.
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[(annotation, *field.metadata)] if field.metadata else annotation)
    # A query's values are all text: there, the word "true" is the one way to say yes.
    for value in [v for v in LOOSE_TRUTHS if not (in_query and v == "true")]:
        try:
            if adapter.validate_python(value) is True:
                return True
        except ValidationError:
            continue
    return False


def _model_fields(model: type[BaseModel], path: str) -> Iterator[tuple[str, Any, FieldInfo]]:
    for name, field in model.model_fields.items():
        yield f"{path}.{name}", field.annotation, field
        for arg in (field.annotation, *get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _model_fields(arg, f"{path}.{name}")


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every API route, those of included routers too (FastAPI keeps an included router whole, as a route)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(list(included.routes))


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def test_every_request_boolean_of_the_api_is_strict() -> None:
    app = create_app(Settings(environment="test", database_url="sqlite://"))
    loose: list[str] = []
    checked: list[str] = []
    for route in _api_routes(list(app.routes)):
        where = f"{','.join(sorted(route.methods or ()))} {route.path}"
        fields: list[tuple[str, Any, FieldInfo, bool]] = []
        for dependant in _dependants(route.dependant):
            for param in (*dependant.query_params, *dependant.header_params, *dependant.cookie_params):
                fields.append((f"{where} {param.name}", param.field_info.annotation, param.field_info, True))
            for body in dependant.body_params:
                for arg in (body.field_info.annotation, *get_args(body.field_info.annotation)):
                    if isinstance(arg, type) and issubclass(arg, BaseModel):
                        fields.extend((*found, False) for found in _model_fields(arg, f"{where} body"))
        for name, annotation, field, in_query in fields:
            if _bools_in(annotation):
                checked.append(name)
                if _accepts_loose_truth(annotation, field, in_query=in_query):
                    loose.append(name)
    assert {"POST /v1/card/purchases body.save_card", "PUT /v1/card/auto-recharge body.enabled"} <= set(checked)
    assert "GET /v1/lots include_spent" in checked
    assert loose == []
