"""Finance's flows: pulling from Stripe, re-scanning chains and reconciling a period. Each takes an Engine and opens
its own short units of work around its network calls (no transaction is open while Stripe or a node answers).
Everything else in finance takes the caller's session and never commits.
"""
