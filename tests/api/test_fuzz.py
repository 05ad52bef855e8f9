"""Fuzzing the API over its own OpenAPI (schemathesis) as each role: no key, a customer's, finance's, an admin's.

Every operation gets a fixed number of generated requests, valid ones and invalid ones, from a fixed seed, each sent
as every role, inside a time budget. None may answer 5xx; every answer must have a status the schema declares for
that operation, the content type it declares and a body that conforms. The app runs in-process on SQLite, with
Stripe answered by the offline fake and no chain configured, so nothing reaches the network.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from services.apikeys.service import issue_key
from services.app.app import create_app
from services.card.stripe_client import StripeGateway, build_stripe_client
from services.core.db import make_engine, unit_of_work
from services.core.migrate import upgrade
from services.core.settings import Settings
from services.ledger.accounts import create_customer_account
from services.ledger.minting import grant
from tests.card.stripe_fake import API_BASE, FakeStripe

EXAMPLES_PER_OPERATION = 10
BUDGET_SECONDS = 110.0
AUTH_HEADERS = ("authorization", "x-api-key")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Fuzzed:
    schema: Any
    headers: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "creditrail.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    settings = Settings(
        environment="test",
        database_url=str(engine.url),
        stripe_secret_key=SecretStr("sk_test_fuzz"),
        stripe_webhook_secrets=[SecretStr("whsec_test_fuzz")],
        stripe_api_base=API_BASE,
        stripe_max_network_retries=0,
        card_process_webhooks_inline=False,
    )
    app = create_app(settings, engine=engine)
    app.state.stripe_gateway = StripeGateway(build_stripe_client(settings, http_client=FakeStripe()), settings)
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="fuzz")
        grant(session, account_id=account_id, amount_credits=1_000_000, idempotency_key="seed")
        keys = {
            "customer": issue_key(session, role="customer", account_id=account_id).key,
            "finance": issue_key(session, role="finance", account_id=None).key,
            "admin": issue_key(session, role="admin", account_id=None).key,
        }
    headers: dict[str, dict[str, str]] = {"none": {}} | {
        role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()
    }
    yield Fuzzed(schemathesis.openapi.from_asgi("/openapi.json", app), headers)
    engine.dispose()


def _fuzz_operation(
    operation: Any, mode: GenerationMode, roles: dict[str, dict[str, str]], failures: list[str]
) -> None:
    """Generate the operation's requests once and send each as every role."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        generated = dict(case.headers or {})
        for role, headers in roles.items():
            sent = generated
            if headers:  # the role's own key, instead of the ones generated from the security schemes
                sent = {name: value for name, value in generated.items() if name.lower() not in AUTH_HEADERS}
            case.headers = {**sent, **headers}
            try:
                case.call_and_validate(checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}, as {role}): {exc}")

    with contextlib.suppress(Unsatisfiable):  # nothing of the operation can be made invalid (no parameters, no body)
        run()


def test_no_generated_request_gets_a_server_error_or_an_undeclared_answer(fuzzed: Fuzzed) -> None:
    deadline = time.monotonic() + BUDGET_SECONDS
    failures: list[str] = []
    operations = [result.ok() for result in fuzzed.schema.get_all_operations()]
    assert len(operations) > 30
    done = 0
    for operation in operations:
        if time.monotonic() > deadline or len(failures) > 20:
            break
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, fuzzed.headers, failures)
        done += 1
    assert not failures, "\n\n".join(failures[:20])
    assert done == len(operations), f"only {done} of {len(operations)} operations within the time budget"
