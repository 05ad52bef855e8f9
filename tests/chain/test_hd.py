import pytest
from bip32 import BIP32
from eth_account import Account
from eth_account.hdaccount import seed_from_mnemonic

from chain.hd import DepositAddressDeriver, XpubError, derive_deposit_address, eip681_transfer_uri
from chain.node import ANVIL_DEV_MNEMONIC

Account.enable_unaudited_hdwallet_features()


def xpub_at(mnemonic: str, path: str, passphrase: str = "") -> str:
    return str(BIP32.from_seed(seed_from_mnemonic(mnemonic, passphrase)).get_xpub_from_path(path))


def eth_account_address(mnemonic: str, index: int, passphrase: str = "") -> str:
    return str(Account.from_mnemonic(mnemonic, passphrase=passphrase, account_path=f"m/44'/60'/0'/0/{index}").address)


@pytest.mark.parametrize("passphrase", ["", "extra words"])
def test_xpub_derivation_matches_eth_account_for_a_random_mnemonic(passphrase):
    _, mnemonic = Account.create_with_mnemonic(passphrase=passphrase)
    account_level = DepositAddressDeriver(xpub_at(mnemonic, "m/44'/60'/0'", passphrase))
    chain_level = DepositAddressDeriver(xpub_at(mnemonic, "m/44'/60'/0'/0", passphrase))
    for index in [0, 1, 2, 7, 1000, 2**31 - 1]:
        expected = eth_account_address(mnemonic, index, passphrase).lower()
        assert account_level.address(index) == expected
        assert chain_level.address(index) == expected


def test_known_vector_anvil_dev_account_zero():
    xpub = xpub_at(ANVIL_DEV_MNEMONIC, "m/44'/60'/0'")
    assert derive_deposit_address(xpub, 0) == "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
    assert DepositAddressDeriver(xpub).addresses(0, 3)[2] == "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"


def test_private_keys_and_wrong_depths_are_refused():
    root = BIP32.from_seed(seed_from_mnemonic(ANVIL_DEV_MNEMONIC, ""))
    with pytest.raises(XpubError, match="private"):
        DepositAddressDeriver(root.get_xpriv_from_path("m/44'/60'/0'"))
    with pytest.raises(XpubError, match="depth 0"):
        DepositAddressDeriver(root.get_xpub())
    with pytest.raises(XpubError, match="not a valid"):
        DepositAddressDeriver("xpub-nonsense")
    deriver = DepositAddressDeriver(root.get_xpub_from_path("m/44'/60'/0'"))
    with pytest.raises(ValueError, match="index"):
        deriver.address(2**31)
    with pytest.raises(ValueError, match="index"):
        deriver.address(-1)


def test_eip681_uri_for_a_usdc_transfer():
    uri = eip681_transfer_uri(
        token="0x833589fcd6edb6e08f4c7c32d4f71b54bda02913",
        chain_id=8453,
        to="0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
        value_units=25_000_000,
    )
    assert uri == (
        "ethereum:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913@8453/transfer"
        "?address=0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266&uint256=25000000"
    )
    with pytest.raises(ValueError, match="not an address"):
        eip681_transfer_uri(token="0x" + "11" * 20, chain_id=1, to="0x1234", value_units=1)
