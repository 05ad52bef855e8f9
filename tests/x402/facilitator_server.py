"""Our built-in facilitator served over the x402 facilitator HTTP API (``/verify``, ``/settle``, ``/supported``), so
the external-facilitator path is tested against a real HTTP facilitator."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from x402.schemas import PaymentPayload, PaymentRequirements

from chain.node import free_port
from services.x402.facilitators import BuiltinFacilitator


def facilitator_app(facilitator: BuiltinFacilitator, calls: list[str]) -> FastAPI:
    app = FastAPI()

    def parse(body: dict[str, Any]) -> tuple[PaymentPayload, PaymentRequirements]:
        return (
            PaymentPayload.model_validate(body["paymentPayload"]),
            PaymentRequirements.model_validate(body["paymentRequirements"]),
        )

    @app.post("/verify")
    def verify(body: dict[str, Any]) -> dict[str, Any]:
        calls.append("verify")
        payload, requirement = parse(body)
        return facilitator.verify(payload, requirement).model_dump(by_alias=True, exclude_none=True)

    @app.post("/settle")
    def settle(body: dict[str, Any]) -> dict[str, Any]:
        calls.append("settle")
        payload, requirement = parse(body)
        response = facilitator.raw_settle(payload, requirement)
        dumped: dict[str, Any] = response.model_dump(by_alias=True, exclude_none=True)
        return dumped

    @app.get("/supported")
    def supported() -> dict[str, Any]:
        calls.append("supported")
        dumped: dict[str, Any] = facilitator.supported().model_dump(by_alias=True, exclude_none=True)
        return dumped

    return app


@contextmanager
def serve_facilitator(facilitator: BuiltinFacilitator) -> Iterator[tuple[str, list[str]]]:
    calls: list[str] = []
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(facilitator_app(facilitator, calls), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="x402-facilitator", daemon=True)
    thread.start()
    try:
        from tests.x402.conftest import wait_until

        wait_until(lambda: server.started or not thread.is_alive(), "the facilitator to start")
        yield f"http://127.0.0.1:{port}", calls
    finally:
        server.should_exit = True
        thread.join(timeout=15)
