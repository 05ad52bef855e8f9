"""Who may read the metrics, and what a scrape renders: shared by the API's ``/metrics`` and the worker's metrics
server (services.ops.metrics_server)."""

from __future__ import annotations

import hmac

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import generate_latest
from sqlalchemy.engine import Engine

from services.core.errors import Forbidden, Unauthenticated
from services.core.settings import Settings
from services.ops.collector import DatabaseCollector


class MetricsTokenRequired(Unauthenticated):
    code = "metrics_token_required"


class MetricsNotPublic(Forbidden):
    code = "metrics_not_public"


def check_metrics_access(settings: Settings, authorization: str | None) -> None:
    """Raise unless ``authorization`` carries the metrics token (when one is set) or the metrics are public."""
    expected = settings.metrics_token.get_secret_value().encode() if settings.metrics_token is not None else b""
    if expected:  # an empty token is no token
        given = authorization[7:].strip().encode() if authorization and authorization[:7].lower() == "bearer " else b""
        if not hmac.compare_digest(given, expected):
            raise MetricsTokenRequired("/metrics needs the metrics bearer token")
        return
    if not settings.metrics_open:
        raise MetricsNotPublic(
            "/metrics is not public here: set CREDITRAIL_METRICS_TOKEN (or CREDITRAIL_METRICS_PUBLIC)"
        )


def database_registry(engine: Engine) -> CollectorRegistry:
    """A registry of the database's gauges for ``engine`` (read at each scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine))
    return registry


def render_metrics(database: CollectorRegistry) -> bytes:
    """This process's metrics, then the database's, in Prometheus text format."""
    return generate_latest(REGISTRY) + generate_latest(database)
