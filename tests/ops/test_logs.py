"""Logs: one line per request (method, path template, status, duration, request id, echoed in X-Request-Id) and one
per job run, in JSON or readable text, and never a secret in them (redaction as the last line of defence)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.apikeys.service import issue_key
from services.core.db import unit_of_work
from services.core.logs import IdleRunsQuiet, make_handler, redact, secrets_of
from services.core.settings import ChainSettings, Settings
from services.worker.jobs import JobSpec
from services.worker.runner import run_job_once
from tests.api.conftest import Api

STRIPE_KEY = "sk_live_51HxYzSecretStripeKey"
WEBHOOK_SECRET = "whsec_rotatingSecretValue"
RPC_URL = "https://mainnet.example-rpc.io/v2/rpcProviderKey12345"


def _settings(**overrides: Any) -> Settings:
    chain = ChainSettings(chain_id=1, rpc_url=RPC_URL, usdc_address="0x" + "33" * 20)
    values: dict[str, Any] = {
        "environment": "test",
        "stripe_secret_key": SecretStr(STRIPE_KEY),
        "stripe_webhook_secrets": [SecretStr(WEBHOOK_SECRET)],
        "usdc_chains": [chain],
    }
    return Settings(**(values | overrides))


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self, event: str) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]
        return [line for line in found if line["event"] == event]


@contextmanager
def captured(log_format: str = "json", settings: Settings | None = None) -> Iterator[Captured]:
    """The root logger's output in ``log_format``, through the same handler the processes use."""
    stream = io.StringIO()
    handler = make_handler(log_format, stream=stream, secrets=secrets_of(settings or _settings()))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_request_logs_one_line_with_its_fields_and_echoes_its_id(api: Api) -> None:
    customer = api.customer()
    with captured() as logs:
        response = api.client.post(
            "/v1/holds",
            json={"amount_credits": 40, "ttl_seconds": 60},
            headers={**customer.headers, "Idempotency-Key": "call-1", "X-Request-Id": "req-42.a"},
        )
        hold_id = response.json()["id"]
        captured_response = api.client.post(
            f"/v1/holds/{hold_id}/capture", json={"amount_credits": 25}, headers=customer.headers
        )
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "req-42.a"
    lines = logs.lines("http_request")
    assert len(lines) == 2
    first, second = lines
    assert {key: first[key] for key in ("method", "path", "status", "request_id", "logger", "level")} == {
        "method": "POST",
        "path": "/v1/holds",
        "status": 201,
        "request_id": "req-42.a",
        "logger": "creditrail.http",
        "level": "info",
    }
    assert isinstance(first["duration_ms"], float | int)
    assert first["duration_ms"] >= 0
    assert second["path"] == "/v1/holds/{hold_id}/capture"  # the template, not the id
    assert second["status"] == 200
    assert second["request_id"] == captured_response.headers["x-request-id"]
    assert len(second["request_id"]) == 32  # generated when none was given
    key = customer.headers["Authorization"].removeprefix("Bearer ")
    assert key not in logs.text
    assert "Authorization" not in logs.text
    assert "Bearer" not in logs.text


def test_an_unusable_request_id_is_replaced_by_a_fresh_one(api: Api) -> None:
    with captured() as logs:
        response = api.client.get("/healthz", headers={"X-Request-Id": "no spaces allowed; " + "x" * 200})
    rid = response.headers["x-request-id"]
    assert len(rid) == 32
    assert rid.isalnum()
    assert logs.lines("http_request")[0]["request_id"] == rid


def test_a_path_no_route_matches_is_logged_under_one_name(api: Api) -> None:
    with captured() as logs:
        assert api.client.get("/wp-admin/sk_live_ZZZZ1234").status_code == 404
    line = logs.lines("http_request")[0]
    assert (line["path"], line["status"]) == ("<unmatched>", 404)
    assert "sk_live_ZZZZ" not in logs.text


def test_a_failure_inside_a_request_is_logged_with_its_request_id_and_no_secret(api: Api) -> None:
    def boom() -> None:
        raise RuntimeError(f"cannot reach {RPC_URL} with {STRIPE_KEY}")

    api.client.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
    with captured(settings=_settings()) as logs:
        logging.getLogger("creditrail.test").info("outside any request")
        response = api.client.get("/boom", headers={"X-Request-Id": "r-500"})
    assert response.status_code == 500
    assert "request_id" not in logs.lines("outside any request")[0]
    failure = next(line for line in logs.lines("unhandled error on GET /boom"))
    assert failure["request_id"] == "r-500"
    assert "RuntimeError" in failure["traceback"]
    request = logs.lines("http_request")[0]
    assert (request["path"], request["status"], request["request_id"]) == ("/boom", 500, "r-500")
    assert STRIPE_KEY not in logs.text
    assert RPC_URL not in logs.text


def _failing_batch(session: Session, now: datetime, batch_size: int) -> int:
    raise RuntimeError(f"node {RPC_URL} refused: Authorization: Bearer abc.def with key {STRIPE_KEY}")


def test_a_job_run_logs_one_line_and_its_error_without_secrets(engine: Engine) -> None:
    spec = JobSpec(name="ops.leaky", batch=_failing_batch, interval_seconds=60, batch_size=10)
    with captured() as logs:
        run_job_once(engine, spec)
    lines = logs.lines("job_run")
    assert len(lines) == 1
    line = lines[0]
    assert (line["job"], line["outcome"], line["logger"], line["level"]) == (
        "ops.leaky",
        "error",
        "creditrail.worker",
        "warning",
    )
    assert {"items", "batches", "duration_ms", "started_at", "finished_at", "owner"} <= line.keys()
    assert "RuntimeError" in line["error"]
    for secret in (STRIPE_KEY, RPC_URL, "/v2/rpcProviderKey12345", "abc.def"):
        assert secret not in logs.text
    assert "[redacted]" in line["error"]


def test_text_lines_are_readable_and_redacted_too(api: Api) -> None:
    with captured("text") as logs:
        api.client.get("/healthz", headers={"X-Request-Id": "t-1"})
        logging.getLogger("creditrail.test").warning("webhook secret %s in use", WEBHOOK_SECRET)
    lines = logs.text.splitlines()
    request = next(line for line in lines if "http_request" in line)
    assert "INFO" in request
    assert "creditrail.http" in request
    assert "method=GET path=/healthz status=200" in request
    assert "request_id=t-1" in request
    assert WEBHOOK_SECRET not in logs.text
    assert "webhook secret [redacted] in use" in logs.text


def test_the_log_format_follows_the_environment_unless_set() -> None:
    assert Settings(environment="development").log_format_in_effect == "text"
    assert Settings(environment="test").log_format_in_effect == "json"
    assert Settings(environment="development", log_format="json").log_format_in_effect == "json"


def test_anything_that_looks_like_a_secret_is_redacted(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        issued = issue_key(session, role="admin", account_id=None)
    text = (
        f"keys {issued.key} sk_test_abc123XYZ rk_live_restricted99 whsec_abcDEF123 "
        "headers {'authorization': 'Basic dXNlcjpwYXNz', 'x-api-key': 'cr_0123456789ab_secretpart'} Bearer tok.en-1"
    )
    cleaned = redact(text)
    for secret in (issued.key, "abc123XYZ", "restricted99", "abcDEF123", "dXNlcjpwYXNz", "secretpart", "tok.en-1"):
        assert secret not in cleaned
    assert f"cr_{issued.prefix}_[redacted]" in cleaned  # the key's prefix names it and stays


def test_a_development_console_leaves_out_idle_job_runs_but_keeps_work_and_failures() -> None:
    stream = io.StringIO()
    handler = make_handler("text", stream=stream, secrets=[])
    handler.addFilter(IdleRunsQuiet())
    log = logging.getLogger("creditrail.test.idle")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info("job_run", extra={"fields": {"job": "usdc.poll.1", "outcome": "success", "items": 0}})
        log.info("job_run", extra={"fields": {"job": "usdc.confirm.1", "outcome": "success", "items": 3}})
        log.warning("job_run", extra={"fields": {"job": "card.inbox", "outcome": "error", "items": 0}})
        log.info("worker_started")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "usdc.poll.1" not in stream.getvalue()
    assert "usdc.confirm.1" in lines[0]
    assert "card.inbox" in lines[1]
    assert "worker_started" in lines[2]


def test_a_customer_session_token_is_redacted_to_its_prefix() -> None:
    cleaned = redact("opened /credits#session=crs_0123456789ab_AxaXxOc5UVJlRYi7FGyuq593miyzsCO6NvROnZKPtmY")
    assert "AxaXxOc5UVJlRYi7" not in cleaned
    assert "crs_0123456789ab_[redacted]" in cleaned
