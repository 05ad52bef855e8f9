"""Events for the platform that embeds creditrail: what happened to an account (a purchase completed, a deposit
credited, credits running low, ...), recorded in the transaction of the change, and delivered to the platform's
webhook endpoints by the worker."""
