"""The outbox: messages (receipts, notices) written in the transaction that made the change, delivered by the
worker."""
