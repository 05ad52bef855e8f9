"""Alerts: a customer's balance running low, credits about to expire, a failed auto-recharge, a budget at 50 / 80 /
100 %. Each crossing is sent once (by email, when the account has one and wants them, and always as an event) and
the alert is armed again when what it watches recovers."""
