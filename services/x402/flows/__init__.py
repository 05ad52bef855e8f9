"""The x402 purchase's functions that call a chain or a facilitator between short units of work of their own."""
