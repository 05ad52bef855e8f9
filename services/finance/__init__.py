"""Finance: reconciliation of each rail against what Stripe and the chains report, reports and the trial balance,
and the actions that work the review queue (services.review) that both rails raise into."""
