"""The card rail's worker jobs: drain the webhook inbox, sync from Stripe, charge auto-recharges.

These jobs call Stripe, which must never happen inside a transaction, so they are worker steps: each gets the
engine and opens its own units of work: a short one to read what is due, the Stripe calls with no transaction
open, then one per result. Each is idempotent and state-driven (what is due is read
from the database, the Stripe calls carry deterministic idempotency keys), so a run killed at any instant loses
and duplicates nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from services.card.flows import auto_recharge, inbox, sync
from services.card.stripe_client import StripeGateway, default_gateway
from services.core.settings import Settings
from services.worker.jobs import JobSpec, StepFn


def inbox_batch(settings: Settings, gateway: StripeGateway | None = None) -> StepFn:
    """Process up to a batch of due inbox events (pending past the grace period, failed past their backoff)."""

    def step(engine: Engine, now: datetime, batch_size: int) -> int:
        used = gateway or default_gateway(settings)
        return inbox.drain(engine, used, settings, now, batch_size)

    return step


def sync_batch(settings: Settings, gateway: StripeGateway | None = None) -> StepFn:
    """One pass over Stripe's recent events and Checkout Sessions; returns what it changed (a pass that changed
    a batch or more runs again, and converges)."""

    def step(engine: Engine, now: datetime, batch_size: int) -> int:
        used = gateway or default_gateway(settings)
        return min(sync.sync(engine, used, settings, now).changed, batch_size)

    return step


def auto_recharge_batch(settings: Settings, gateway: StripeGateway | None = None) -> StepFn:
    """Find new threshold crossings and charge up to a batch of them off-session."""

    def step(engine: Engine, now: datetime, batch_size: int) -> int:
        used = gateway or default_gateway(settings)
        return auto_recharge.run(engine, used, now, batch_size)

    return step


def inbox_job(settings: Settings) -> JobSpec:
    return JobSpec(
        name="card.inbox",
        batch=None,
        step=inbox_batch(settings),
        interval_seconds=settings.card_inbox_interval_seconds,
        batch_size=settings.card_inbox_batch_size,
        description="Process stored Stripe events the API did not, and retry failed ones after their backoff.",
    )


def sync_job(settings: Settings) -> list[JobSpec]:
    """None until a real Stripe key is set: the sync reads from Stripe."""
    if not settings.stripe_configured:
        return []
    return [
        JobSpec(
            name="card.sync",
            batch=None,
            step=sync_batch(settings),
            interval_seconds=settings.card_sync_interval_seconds,
            batch_size=settings.card_sync_batch_size,
            description="Read recent Stripe events and Checkout Sessions back, so a lost webhook still mints.",
        )
    ]


def auto_recharge_job(settings: Settings) -> list[JobSpec]:
    """None until a real Stripe key is set: auto-recharge charges through Stripe."""
    if not settings.stripe_configured:
        return []
    return [
        JobSpec(
            name="card.auto_recharge",
            batch=None,
            step=auto_recharge_batch(settings),
            interval_seconds=settings.card_auto_recharge_interval_seconds,
            batch_size=settings.card_auto_recharge_batch_size,
            description="Charge saved cards off-session when a balance falls below its auto-recharge threshold.",
        )
    ]


CARD_JOB_FACTORIES = (inbox_job, sync_job, auto_recharge_job)
