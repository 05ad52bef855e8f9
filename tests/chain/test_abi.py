import hashlib
import json
import shutil
import subprocess

from chain.abi import TRANSFER_TOPIC, Abi, abi_signature, event_topic, load_test_usdc_artifact, usdc_abi
from chain.node import project_root

from .conftest import ensure_node_modules


def _signatures(abi: Abi, kind: str) -> set[str]:
    return {abi_signature(entry) for entry in abi if entry["type"] == kind}


def test_transfer_topic_is_keccak_of_the_event_signature():
    assert TRANSFER_TOPIC == "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    assert event_topic("Approval(address,address,uint256)") == (
        "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
    )


def test_usdc_abi_has_erc20_permit_and_eip3009():
    functions = _signatures(usdc_abi(), "function")
    events = _signatures(usdc_abi(), "event")
    assert {
        "name()",
        "symbol()",
        "decimals()",
        "totalSupply()",
        "balanceOf(address)",
        "allowance(address,address)",
        "transfer(address,uint256)",
        "transferFrom(address,address,uint256)",
        "approve(address,uint256)",
        "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
        "nonces(address)",
        "DOMAIN_SEPARATOR()",
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
        "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
        "authorizationState(address,bytes32)",
    } <= functions
    assert {
        "Transfer(address,address,uint256)",
        "Approval(address,address,uint256)",
        "AuthorizationUsed(address,bytes32)",
    } <= events


def test_load_abi_returns_a_fresh_copy():
    first = usdc_abi()
    first.clear()
    assert usdc_abi()


def test_test_token_implements_the_whole_usdc_abi():
    artifact = load_test_usdc_artifact()
    for kind in ("function", "event"):
        assert _signatures(usdc_abi(), kind) <= _signatures(artifact.abi, kind)
    token_functions = {abi_signature(e): e for e in artifact.abi if e["type"] == "function"}
    for entry in usdc_abi():
        if entry["type"] == "function":
            mine = token_functions[abi_signature(entry)]
            assert [o["type"] for o in mine["outputs"]] == [o["type"] for o in entry["outputs"]]
            assert mine["stateMutability"] == entry["stateMutability"]


def test_artifact_records_the_current_source():
    artifact = load_test_usdc_artifact()
    source = (project_root() / artifact.source_path).read_bytes()
    assert hashlib.sha256(source).hexdigest() == artifact.source_sha256, "run node scripts/compile_token.js"
    assert artifact.bytecode.startswith("0x60")
    assert len(artifact.bytecode) > 1000


def test_artifact_matches_a_fresh_compile():
    ensure_node_modules()
    node = shutil.which("node")
    assert node is not None, "node is needed to compile the test token"
    root = project_root()
    fresh = subprocess.run(
        [node, "scripts/compile_token.js", "--stdout"], cwd=root, capture_output=True, check=True, timeout=120
    ).stdout
    checked_in = (root / "contracts_abi" / "TestUSDC.bytecode.json").read_bytes()
    assert json.loads(fresh) == json.loads(checked_in), "run node scripts/compile_token.js"
    assert fresh == checked_in
