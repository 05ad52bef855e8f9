"""The node of a configured chain: its JSON-RPC client, and the check that its USDC token is the one every
conversion assumes. The USDC rail's jobs and finance's chain reconciliation both reach a chain through here.
"""

from __future__ import annotations

from chain.errors import ChainResponseError
from chain.rpc import ChainReader, ChainRpc
from services.core.money import USDC_DECIMALS
from services.core.settings import ChainSettings
from services.usdc.errors import TokenDecimalsMismatch


def rpc_for(chain: ChainSettings) -> ChainRpc:
    """The JSON-RPC client of a configured chain (it refuses a node serving another chain id)."""
    return ChainRpc(chain.rpc_url, expected_chain_id=chain.chain_id, timeout_seconds=chain.rpc_timeout_seconds)


def check_token_decimals(chain: ChainSettings, rpc: ChainReader) -> None:
    """Refuse a chain whose configured USDC contract does not have the decimals every conversion assumes
    (services.core.money.USDC_DECIMALS): a :class:`TokenDecimalsMismatch` saying so in one line. A reader that
    cannot make contract calls (a test double) is not checked; a node error is raised as it is."""
    read = getattr(rpc, "token_decimals", None)
    if read is None:
        return
    try:
        decimals = int(read(chain.usdc_address))
    except ChainResponseError as exc:
        raise TokenDecimalsMismatch(
            f"chain {chain.chain_id}: usdc_address {chain.usdc_address} has no decimals() (is it the token?); "
            f"the USDC rail needs a token of {USDC_DECIMALS} decimals",
            chain_id=chain.chain_id,
        ) from exc
    if decimals != USDC_DECIMALS:
        raise TokenDecimalsMismatch(
            f"chain {chain.chain_id}: the token at usdc_address {chain.usdc_address} has {decimals} decimals; "
            f"the USDC rail needs {USDC_DECIMALS}",
            chain_id=chain.chain_id,
            decimals=decimals,
        )
