"""Access to EVM chains, knowing nothing of credits, accounts or storage.

- ``chain.rpc``: a JSON-RPC client per chain (timeouts, retries, classified errors in ``chain.errors``).
- ``chain.logs``: ERC-20 ``Transfer`` logs decoded from topics and data into ``TransferLog``.
- ``chain.scanner``: bounded, adaptive ``eth_getLogs`` scans from a caller-held checkpoint.
- ``chain.reorg``: reorganisation detection from a block number -> hash map the caller keeps.
- ``chain.hd``: deposit addresses from an xpub, EIP-681 payment URIs.
- ``chain.abi``: the ABI JSON of ``contracts_abi``.
- ``chain.node`` and ``chain.devchain``: a local anvil and the test token, for development and tests.
"""
