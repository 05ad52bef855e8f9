"""Finance: the exceptions queue both rails report into (and, later, reconciliation and reports)."""
