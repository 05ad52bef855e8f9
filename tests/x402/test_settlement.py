"""Never charge twice, never mint on failure: duplicates, payment identifiers, refusals, settlement failures of each
kind, outcomes not known at once, and payments a crash left settling."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain.addresses import checksum
from chain.devchain import DevWallet, LocalToken
from services.core.clock import utcnow
from services.x402.facilitators import BuiltinFacilitator, Facilitator, Outcome, Settlement
from services.x402.flows.purchase import purchase, resolve_left_settling
from services.x402.service import PurchaseRequest
from services.x402.token import calldata
from tests.x402.conftest import AMOUNT_UNITS, CREDITS, PAYER_FUNDS_UNITS, RELAYER, Shop
from tests.x402.support import decode, offered_requirement, sign_payment, with_identifier


def _post(shop: Shop, payer: LocalAccount, header: str, credits: int = CREDITS, **extra: Any) -> httpx.Response:
    return httpx.post(
        shop.credits_url,
        json={"credits": credits, "wallet_address": payer.address, **extra},
        headers={"PAYMENT-SIGNATURE": header},
        timeout=60,
    )


def _requirement(shop: Shop, payer: LocalAccount, credits: int = CREDITS) -> Any:
    return offered_requirement(shop.offer({"credits": credits, "wallet_address": payer.address}))


class HookedFacilitator:
    """A facilitator doing what the test says before settling, and changing what settlement reports."""

    name = "hooked"

    def __init__(
        self,
        inner: Facilitator,
        before: Callable[[Any], None] | None = None,
        report: Callable[[Settlement], Settlement] | None = None,
    ) -> None:
        self.inner = inner
        self.before = before
        self.report = report

    def verify(self, payload: Any, requirement: Any) -> Any:
        return self.inner.verify(payload, requirement)

    def settle(self, payload: Any, requirement: Any, *, on_broadcast: Callable[[str], None]) -> Settlement:
        if self.before is not None:
            self.before(payload)
        settlement = self.inner.settle(payload, requirement, on_broadcast=on_broadcast)
        return self.report(settlement) if self.report is not None else settlement


def test_the_same_payment_sent_ten_times_at_once_is_settled_and_minted_once(shop: Shop) -> None:
    payer = shop.payer()
    header = sign_payment(payer, _requirement(shop, payer))
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        response = _post(shop, payer, header)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers if a.status_code != 200]
    transactions = {decode(a.headers["PAYMENT-RESPONSE"])["transaction"] for a in answers}
    lots = {a.json()["lot"]["id"] for a in answers}
    assert len(transactions) == 1
    assert len(lots) == 1
    assert len(shop.payments()) == 1
    assert len(shop.lots()) == 1
    assert len(shop.deposits()) == 1
    assert shop.token.balance_units(payer.address) == PAYER_FUNDS_UNITS - AMOUNT_UNITS  # one transfer
    shop.assert_invariants()


def test_a_payment_sent_again_later_gets_the_first_answer(shop: Shop) -> None:
    payer = shop.payer()
    header = sign_payment(payer, _requirement(shop, payer))
    first = _post(shop, payer, header)
    assert first.status_code == 200, first.text
    again = _post(shop, payer, header)
    assert again.status_code == 200, again.text
    assert again.json()["lot"] == first.json()["lot"]
    assert again.headers["PAYMENT-RESPONSE"] == first.headers["PAYMENT-RESPONSE"]
    assert len(shop.payments()) == 1
    assert len(shop.lots()) == 1


def test_a_payment_identifier_answers_once_and_refuses_another_request(shop: Shop) -> None:
    payer = shop.payer()
    requirement = _requirement(shop, payer)
    identifier = "order_" + "7" * 20
    first = _post(shop, payer, sign_payment(payer, requirement, extensions=with_identifier(identifier)))
    assert first.status_code == 200, first.text
    # The client signs again (another nonce) under the same identifier: the first answer, nothing settled again.
    resigned = _post(shop, payer, sign_payment(payer, requirement, extensions=with_identifier(identifier)))
    assert resigned.status_code == 200, resigned.text
    assert resigned.json()["lot"]["id"] == first.json()["lot"]["id"]
    # The same identifier for another request: 409, nothing written.
    other = _requirement(shop, payer, credits=1_000)
    reused = _post(shop, payer, sign_payment(payer, other, extensions=with_identifier(identifier)), credits=1_000)
    assert reused.status_code == 409, reused.text
    assert reused.json()["error"]["code"] == "payment_identifier_reused"
    assert len(shop.payments()) == 1
    assert len(shop.lots()) == 1
    assert shop.token.balance_units(payer.address) == PAYER_FUNDS_UNITS - AMOUNT_UNITS
    bad = _post(shop, payer, sign_payment(payer, requirement, extensions=with_identifier("short")))
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_payment_header"


@pytest.mark.parametrize(
    ("code", "changes"),
    [
        ("wrong_chain", {"network": "eip155:1"}),
        ("wrong_token", {"asset": "other"}),
        ("wrong_amount", {"amount": str(AMOUNT_UNITS - 1)}),
        ("wrong_amount", {"amount": str(AMOUNT_UNITS + 10_000)}),
        ("authorization_expired", {"max_timeout_seconds": 2}),
        ("wrong_pay_to", {"pay_to": "foreign"}),
    ],
)
def test_a_payment_that_does_not_match_the_offer_is_refused_and_nothing_is_written(
    shop: Shop, other_token: LocalToken, code: str, changes: dict[str, Any]
) -> None:
    payer = shop.payer()
    requirement = _requirement(shop, payer)
    if changes.get("asset") == "other":
        changes = {"asset": checksum(other_token.address)}
    if changes.get("pay_to") == "foreign":
        changes = {"pay_to": checksum(Account.create().address)}
    response = _post(shop, payer, sign_payment(payer, requirement, **changes))
    assert response.status_code == 402, response.text
    assert response.json()["code"] == code
    assert decode(response.headers["PAYMENT-REQUIRED"])["error"] == code
    assert shop.payments() == []
    assert shop.lots() == []
    assert shop.deposits() == []
    assert shop.token.balance_units(payer.address) == PAYER_FUNDS_UNITS


def test_a_bad_signature_or_an_empty_wallet_is_refused_before_settlement(shop: Shop) -> None:
    payer = shop.payer()
    requirement = _requirement(shop, payer)
    header = decode(sign_payment(payer, requirement))
    signature = header["payload"]["signature"]
    header["payload"]["signature"] = signature[:-4] + ("00" if signature[-4:-2] != "00" else "11") + signature[-2:]
    tampered = base64.b64encode(json.dumps(header).encode()).decode()
    bad = _post(shop, payer, tampered)
    assert bad.status_code == 402, bad.text
    assert bad.json()["code"] == "invalid_signature"
    broke = shop.payer(funds_units=0)
    empty = _post(shop, broke, sign_payment(broke, _requirement(shop, broke)))
    assert empty.status_code == 402, empty.text
    assert empty.json()["code"] == "insufficient_balance"
    garbage = _post(shop, payer, "not base64!")
    assert garbage.status_code == 400
    assert garbage.json()["error"]["code"] == "invalid_payment_header"
    assert shop.payments() == []
    assert shop.lots() == []


def _cancel_authorization(shop: Shop, payer: LocalAccount, nonce: str) -> None:
    """The payer cancels its authorization (EIP-3009 cancelAuthorization, relayed by the token's owner)."""
    signed = payer.sign_typed_data(
        {
            "name": "Test USD Coin",
            "version": "2",
            "chainId": shop.chain_id,
            "verifyingContract": checksum(shop.token.address),
        },
        {"CancelAuthorization": [{"name": "authorizer", "type": "address"}, {"name": "nonce", "type": "bytes32"}]},
        {"authorizer": payer.address, "nonce": bytes.fromhex(nonce[2:])},
    )
    data = calldata(
        "cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)",
        ["address", "bytes32", "uint8", "bytes32", "bytes32"],
        [payer.address, bytes.fromhex(nonce[2:]), signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")],
    )
    shop.token.wallet.transact(shop.token.address, data)


def _drain(shop: Shop, payer: LocalAccount) -> None:
    """The payer moves its whole balance away (with ether to pay for it)."""
    shop.rpc.request("anvil_setBalance", [payer.address, hex(10**18)])
    own = DevWallet(shop.rpc, payer)
    own.transact(shop.token.address, shop.token.transfer_data(Account.create().address, PAYER_FUNDS_UNITS))


@pytest.mark.parametrize("kind", ["authorization_used", "insufficient_balance"])
def test_a_settlement_that_fails_mints_nothing_and_says_why(make_shop: Callable[..., Shop], kind: str) -> None:
    holder: dict[str, Any] = {}

    def before(payload: Any) -> None:
        payer = holder["payer"]
        if kind == "authorization_used":
            _cancel_authorization(holder["shop"], payer, payload.payload["authorization"]["nonce"])
        else:
            _drain(holder["shop"], payer)

    shop = make_shop(wrap=lambda inner: HookedFacilitator(inner, before=before))
    holder["shop"] = shop
    payer = holder["payer"] = shop.payer()
    response = _post(shop, payer, sign_payment(payer, _requirement(shop, payer)))
    assert response.status_code == 402, response.text
    assert response.json()["code"] == kind
    [payment] = shop.payments()
    assert payment.status == "failed"
    assert payment.failure_code == kind
    assert payment.lot_id is None
    assert shop.lots() == []
    # Sent again: the same answer, nothing settled again.
    again = _post(shop, payer, sign_payment(payer, _requirement(shop, payer)))
    assert again.status_code == 402
    shop.assert_invariants()


def test_an_authorization_that_expires_before_it_is_settled_mints_nothing(own_shop: Shop) -> None:
    shop = own_shop
    payer = shop.payer()

    def before(payload: Any) -> None:
        shop.rpc.request("evm_increaseTime", [3_600])
        shop.rpc.request("anvil_mine", ["0x1"])

    shop.rail.facilitator = HookedFacilitator(shop.rail.facilitator, before=before)
    response = _post(shop, payer, sign_payment(payer, _requirement(shop, payer)))
    assert response.status_code == 402, response.text
    assert response.json()["code"] == "authorization_expired"
    [payment] = shop.payments()
    assert payment.status == "failed"
    assert shop.lots() == []
    assert shop.token.balance_units(payer.address) == PAYER_FUNDS_UNITS


@pytest.mark.parametrize("hash_known", [True, False])
def test_an_outcome_not_known_after_broadcast_is_resolved_before_answering(
    make_shop: Callable[..., Shop], hash_known: bool
) -> None:
    def lost(settlement: Settlement) -> Settlement:
        # As if the node timed out after taking the transaction (or the facilitator's answer was lost).
        return Settlement(Outcome.UNKNOWN, settlement.tx_hash if hash_known else None, message="timed out")

    shop = make_shop(wrap=lambda inner: HookedFacilitator(inner, report=lost))
    payer = shop.payer()
    response = _post(shop, payer, sign_payment(payer, _requirement(shop, payer)))
    assert response.status_code == 200, response.text
    assert response.json()["lot"]["credits"] == CREDITS
    assert len(shop.payments()) == 1
    assert len(shop.lots()) == 1


def test_a_payment_left_settling_by_a_crash_is_resolved_by_the_job(make_shop: Callable[..., Shop]) -> None:
    crashed: dict[str, Any] = {}

    class Crash(Exception):
        pass

    def crash(settlement: Settlement) -> Settlement:
        crashed["tx"] = settlement.tx_hash
        raise Crash("the process died after broadcasting")

    shop = make_shop(wrap=lambda inner: HookedFacilitator(inner, report=crash))
    payer = shop.payer()
    header = sign_payment(payer, _requirement(shop, payer))
    request = PurchaseRequest(credits=CREDITS, wallet_address=payer.address)
    with pytest.raises(Crash):
        purchase(
            shop.engine, shop.rail, request, payment_header=("PAYMENT-SIGNATURE", header), resource=shop.credits_url
        )
    [payment] = shop.payments()
    assert payment.status == "settling"
    assert payment.tx_hash == crashed["tx"]
    assert shop.lots() == []
    later = utcnow().replace(microsecond=0)

    assert resolve_left_settling(shop.engine, shop.rail, now=later + timedelta(seconds=5), batch_size=10) == 1
    assert resolve_left_settling(shop.engine, shop.rail, now=later + timedelta(seconds=6), batch_size=10) == 0
    [payment] = shop.payments()
    assert payment.status == "settled"
    assert payment.lot_id is not None
    assert len(shop.lots()) == 1
    # The client sending its payment again gets the resolved answer.
    again = _post(shop, payer, header)
    assert again.status_code == 200
    assert again.json()["lot"]["id"] == payment.lot_id
    shop.assert_invariants()


class TwoRelayers:
    """Two built-in facilitators relaying from one key, each counting nonces itself (two API processes)."""

    name = "two"

    def __init__(self, first: Facilitator, second: Facilitator) -> None:
        self.relayers = [first, second]
        self.turn = 0
        self.lock = threading.Lock()

    def _next(self) -> Facilitator:
        with self.lock:
            self.turn += 1
            return self.relayers[self.turn % 2]

    def verify(self, payload: Any, requirement: Any) -> Any:
        return self.relayers[0].verify(payload, requirement)

    def settle(self, payload: Any, requirement: Any, *, on_broadcast: Callable[[str], None]) -> Settlement:
        return self._next().settle(payload, requirement, on_broadcast=on_broadcast)


def test_processes_relaying_from_one_key_take_each_others_nonces_in_their_stride(shop: Shop) -> None:
    second = BuiltinFacilitator(shop.rail.rpcs, RELAYER.key.hex())
    shop.rail.facilitator = TwoRelayers(shop.rail.facilitator, second)
    payers = [shop.payer() for _ in range(6)]
    headers = [sign_payment(payer, _requirement(shop, payer)) for payer in payers]
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send(index: int) -> None:
        response = _post(shop, payers[index], headers[index])
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(a.status_code for a in answers) == [200] * 6, [a.text for a in answers if a.status_code != 200]
    assert len(shop.lots()) == 6
    shop.assert_invariants()


def test_a_payment_left_settling_is_finished_by_the_clients_retry(make_shop: Callable[..., Shop]) -> None:
    def crash(settlement: Settlement) -> Settlement:
        raise RuntimeError("the process died after broadcasting")

    shop = make_shop(wrap=lambda inner: HookedFacilitator(inner, report=crash))
    payer = shop.payer()
    header = sign_payment(payer, _requirement(shop, payer))
    request = PurchaseRequest(credits=CREDITS, wallet_address=payer.address)
    with pytest.raises(RuntimeError):
        purchase(
            shop.engine, shop.rail, request, payment_header=("PAYMENT-SIGNATURE", header), resource=shop.credits_url
        )
    [payment] = shop.payments()
    assert payment.status == "settling"
    again = _post(shop, payer, header)
    assert again.status_code == 200, again.text
    [payment] = shop.payments()
    assert payment.status == "settled"
    assert again.json()["lot"]["id"] == payment.lot_id
    assert len(shop.lots()) == 1
    shop.assert_invariants()


def _relay(shop: Shop, header: str) -> str:
    """Relay the payment's authorization ourselves (as anyone who saw it could); the transaction's hash."""
    payload = decode(header)["payload"]
    auth, signature = payload["authorization"], bytes.fromhex(payload["signature"][2:])
    data = calldata(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
        ["address", "address", "uint256", "uint256", "uint256", "bytes32", "uint8", "bytes32", "bytes32"],
        [
            auth["from"],
            auth["to"],
            int(auth["value"]),
            int(auth["validAfter"]),
            int(auth["validBefore"]),
            bytes.fromhex(auth["nonce"][2:]),
            signature[64] if signature[64] >= 27 else signature[64] + 27,
            signature[:32],
            signature[32:64],
        ],
    )
    receipt = shop.token.wallet.transact(shop.token.address, data)
    return str(receipt["transactionHash"]).lower()


@pytest.mark.parametrize("when", ["before_the_request", "between_verify_and_settle"])
def test_a_payment_someone_else_relayed_first_buys_the_credits_once(make_shop: Callable[..., Shop], when: str) -> None:
    relayed: dict[str, str] = {}

    def before(payload: Any) -> None:
        if when == "between_verify_and_settle":
            relayed["tx"] = _relay(shop, relayed["header"])

    shop = make_shop(wrap=lambda inner: HookedFacilitator(inner, before=before))
    payer = shop.payer()
    header = relayed["header"] = sign_payment(payer, _requirement(shop, payer))
    if when == "before_the_request":
        relayed["tx"] = _relay(shop, header)
    response = _post(shop, payer, header)
    assert response.status_code == 200, response.text
    assert decode(response.headers["PAYMENT-RESPONSE"])["transaction"] == relayed["tx"]
    assert response.json()["lot"]["credits"] == CREDITS
    [payment] = shop.payments()
    assert payment.status == "settled"
    assert payment.tx_hash == relayed["tx"]
    assert len(shop.lots()) == 1
    assert shop.token.balance_units(payer.address) == PAYER_FUNDS_UNITS - AMOUNT_UNITS
    shop.assert_invariants()
