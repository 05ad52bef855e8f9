"""Operating endpoints: ``/healthz`` (liveness), ``/readyz`` (readiness, with its reasons) and ``/metrics``
(Prometheus text format).

``/metrics`` is protected by settings: with ``CREDITRAIL_METRICS_TOKEN`` set it asks for that bearer token; without
one it answers only when public (``CREDITRAIL_METRICS_PUBLIC``, by default true in development and test only).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from services.api.openapi import ErrorOut
from services.core.settings import Settings
from services.ops.metrics_access import check_metrics_access, database_registry, render_metrics
from services.ops.readiness import NotReady, readiness_reasons
from services.worker.deps import get_jobs

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers (no database work)."""
    return {"status": "ok"}


def _job_names(request: Request) -> list[str]:
    """The jobs this install runs (built once per app): only their failures count against readiness."""
    names: list[str] | None = getattr(request.app.state, "ops_job_names", None)
    if names is None:
        names = [spec.name for spec in get_jobs(request)]
        request.app.state.ops_job_names = names
    return names


@router.get("/readyz", responses={503: {"model": ErrorOut, "description": "Not ready, with the reasons"}})
def readyz(request: Request) -> dict[str, str]:
    """Readiness: the database answers, its schema is at head, chains' listeners keep up, no job keeps failing.
    503 with ``error.details.reasons`` (each a code, a message and details) when not."""
    settings: Settings = request.app.state.settings
    reasons = readiness_reasons(request.app.state.engine, settings, _job_names(request))
    if reasons:
        raise NotReady(
            "not ready: " + "; ".join(reason.message for reason in reasons),
            reasons=[asdict(reason) for reason in reasons],
        )
    return {"status": "ready"}


def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry | None = getattr(request.app.state, "ops_registry", None)
    if registry is None:
        registry = database_registry(request.app.state.engine)
        request.app.state.ops_registry = registry
    return registry


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Prometheus metrics: this process's counters (ledger operations, webhooks) and the database's gauges."""
    check_metrics_access(request.app.state.settings, authorization)
    database = _registry(request)
    return Response(await run_in_threadpool(render_metrics, database), media_type=CONTENT_TYPE_LATEST)
