"""The purchase history is read through the card rail's test harness (a Stripe fake, the app, a customer)."""

from tests.card.conftest import card

__all__ = ["card"]
