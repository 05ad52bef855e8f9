"""A local stand-in for Stripe, for development and browser tests: never for real payments.

It answers the Stripe API calls creditrail makes (customers, Checkout Sessions, PaymentIntents, charges, balance
transactions, events) through the real ``stripe`` SDK pointed at it (``CREDITRAIL_STRIPE_API_BASE``), with Stripe's
object shapes, form-encoded parameters, idempotency keys, errors and lists; it serves a test checkout page at each
session's ``url`` (test cards pay, decline or ask for authentication), records events, and sends them as signed
webhooks. It runs only in the development and test environments.

- :mod:`.forms`: Stripe's form encoding of nested parameters, decoded.
- :mod:`.cards`: the test cards and what each does.
- :mod:`.store`: the objects and Stripe's side of a payment (in memory, one lock).
- :mod:`.webhooks`: signed deliveries, retried with backoff.
- :mod:`.api`: the HTTP API (``/v1/...``) and :mod:`.page`: the checkout page.
- :mod:`.server`: starting it (uvicorn in a thread), keeping its state; :mod:`.errors`: its errors (Stripe's shape,
  and the refusal outside development).
"""
