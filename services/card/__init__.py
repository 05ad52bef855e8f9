"""The card rail: prepaid credits bought through Stripe Checkout, fulfilled from signed webhooks, a sync job and the
success page, with refunds, disputes and opt-in auto-recharge."""
