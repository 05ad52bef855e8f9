"""The worker: the scheduler's periodic jobs (lot expiry, hold expiry; the rails add theirs)."""
