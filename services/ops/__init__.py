"""Operating creditrail: metrics, health and readiness, request logs, offline API docs (above the domains)."""
