"""The USDC rail's flows: the chain listener, which takes an Engine and opens its own short units of work around
its node calls (no transaction is open while a node answers). Everything else in the rail takes the caller's session
and never commits.
"""
