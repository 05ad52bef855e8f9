"""Alerts over HTTP: the customer's own settings (an API key or a customer session) under /v1/account/alerts, and an
account's under /v1/admin/accounts/{id}/alerts for the platform's admin."""

from __future__ import annotations

from fastapi import APIRouter

from services.alerts.schemas import AlertSettingsIn, AlertSettingsOut
from services.alerts.service import get_alert_settings, update_alert_settings
from services.api.deps import AdminKey, CustomerOrSession, SessionDep, SettingsDep
from services.api.principal import Principal
from services.api.types import Id
from services.core.clock import utcnow

router = APIRouter(prefix="/v1", tags=["alerts"])
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])


def _update(session: SessionDep, settings: SettingsDep, account_id: int, body: AlertSettingsIn) -> AlertSettingsOut:
    given = {name: getattr(body, name) for name in body.model_fields_set}
    if "email_enabled" in given and given["email_enabled"] is None:
        given.pop("email_enabled")  # null: kept, as when left out
    return update_alert_settings(session, account_id, now=utcnow(), settings=settings, **given)


def _account(principal: Principal) -> int:
    assert principal.account_id is not None  # guaranteed by CustomerOrSession
    return principal.account_id


@router.get("/account/alerts")
def get_own_alerts(session: SessionDep, principal: CustomerOrSession) -> AlertSettingsOut:
    return get_alert_settings(session, _account(principal), utcnow())


@router.patch("/account/alerts")
def update_own_alerts(
    body: AlertSettingsIn, session: SessionDep, settings: SettingsDep, principal: CustomerOrSession
) -> AlertSettingsOut:
    """The low-balance threshold (null: off) and whether alert emails are sent (events are always recorded)."""
    return _update(session, settings, _account(principal), body)


@admin_router.get("/accounts/{account_id}/alerts")
def get_account_alerts(account_id: Id, session: SessionDep, _admin: AdminKey) -> AlertSettingsOut:
    return get_alert_settings(session, account_id, utcnow())


@admin_router.patch("/accounts/{account_id}/alerts")
def update_account_alerts(
    account_id: Id, body: AlertSettingsIn, session: SessionDep, settings: SettingsDep, _admin: AdminKey
) -> AlertSettingsOut:
    return _update(session, settings, account_id, body)


ROUTERS = (router, admin_router)
