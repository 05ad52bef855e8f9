"""The card rail's flows: functions that take an Engine and open their own short units of work around Stripe calls
(no transaction is open while Stripe answers), or batch commits of their own (the webhook intake). Everything else in
the card rail takes the caller's session and never commits.
"""
