"""The customer's purchase history across both rails: a read over card purchases and USDC deposits, above the rails
and the receipts it links to."""
