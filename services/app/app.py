"""The FastAPI application: every domain's routers, one error handler, OpenAPI at /docs (served offline), the
operating endpoints (/healthz, /readyz, /metrics) and one log line per request."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from services.alerts.endpoints import ROUTERS as ALERTS_ROUTERS
from services.api.cors import ApiCors
from services.api.errors import install_error_handlers
from services.api.guard import RequestGuard
from services.api.openapi import document_errors
from services.api.principal import SignedRequests
from services.apikeys.endpoints import router as api_keys_router
from services.apikeys.service import ApiKeys
from services.apikeys.session_endpoints import ROUTERS as SESSION_ROUTERS
from services.app.jobs import default_jobs
from services.card.endpoints import ROUTERS as CARD_ROUTERS
from services.card.repository import card_label_of_purchase
from services.core.db import make_engine
from services.core.migrate import ensure_schema
from services.core.settings import Settings, get_settings
from services.events.endpoints import router as events_router
from services.finance.endpoints import router as finance_router
from services.ledger.endpoints import admin_router as ledger_admin_router
from services.ledger.endpoints import router as ledger_router
from services.ops.docs import install_docs
from services.ops.endpoints import router as ops_router
from services.ops.http_log import RequestLogMiddleware
from services.outbox.endpoints import page_router as receipt_pages_router
from services.outbox.endpoints import router as receipts_router
from services.purchases.endpoints import router as purchases_router
from services.usdc.endpoints import admin_router as usdc_admin_router
from services.usdc.endpoints import claims_router as usdc_claims_router
from services.usdc.endpoints import router as usdc_router
from services.wallets.endpoints import ROUTERS as WALLET_ROUTERS
from services.wallets.service import WalletSignedRequests
from services.widget.endpoints import router as credits_page_router
from services.worker.endpoints import router as jobs_router
from services.x402.endpoints import router as x402_router
from services.x402.topup import X402TopUp

log = logging.getLogger("creditrail.api")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The app. Without an ``engine`` it builds one from settings and brings the schema up to date on start
    (or refuses to start when the schema is behind and auto-migration is off)."""
    settings = settings or get_settings()
    owns_engine = engine is None
    app_engine = engine or make_engine(settings.database_url, pool_size=settings.database_pool_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owns_engine:
            ensure_schema(app_engine, auto_migrate=settings.auto_migrate)
            # Everything imported and built at start lives as long as the process: moved out of the collector's
            # sight, so that its full collections (tens of milliseconds) do not stall requests.
            gc.collect()
            gc.freeze()
            # Acknowledging a webhook hands it to a thread and back; see the setting.
            sys.setswitchinterval(settings.api_thread_switch_interval_seconds)
        yield
        if owns_engine:
            app_engine.dispose()

    app = FastAPI(
        title="creditrail",
        version="0.1.0",
        description="Prepaid usage credits over card and USDC, kept in one double-entry ledger.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = app_engine
    app.state.settings = settings
    app.state.jobs_for = default_jobs
    app.state.keys = ApiKeys()
    signed_requests: SignedRequests = WalletSignedRequests(settings)
    app.state.signed_requests = signed_requests
    app.state.card_of_purchase = card_label_of_purchase
    install_error_handlers(app)
    # Inside the guard (added before it): it reads the caller the guard authenticated.
    app.add_middleware(X402TopUp)
    app.add_middleware(
        RequestGuard, max_body_bytes=settings.api_max_body_bytes, max_json_depth=settings.api_max_json_depth
    )
    routers = (
        ledger_router,
        ledger_admin_router,
        api_keys_router,
        *SESSION_ROUTERS,
        *CARD_ROUTERS,
        usdc_router,
        usdc_admin_router,
        usdc_claims_router,
        purchases_router,
        finance_router,
        credits_page_router,
        jobs_router,
        ops_router,
        receipts_router,
        events_router,
        *ALERTS_ROUTERS,
        *WALLET_ROUTERS,
        receipt_pages_router,
        x402_router,
    )
    for router in routers:
        app.include_router(router)
    install_docs(app)
    document_errors(app)  # after every route: it declares each one's errors in the OpenAPI
    # Outside the guard: a browser's preflight (OPTIONS, no token) is answered before authentication.
    app.add_middleware(ApiCors, settings=settings)
    app.add_middleware(RequestLogMiddleware)
    return app
