import csv
import io
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.errors import InvalidRequest
from services.finance.reports import (
    CardExternal,
    ChainExternal,
    ExpiryMonth,
    LedgerFigures,
    UsdcExternal,
    iter_trial_balance,
    period_report,
    period_report_csv,
    trial_balance,
    trial_balance_csv,
    trial_balance_page,
)
from services.ledger import repository as repo
from services.ledger.system_accounts import SystemAccount
from tests.finance.report_support import (
    adjust_down,
    adjust_up,
    at,
    claw,
    expire_at,
    hold_and_capture,
    mint_usdc,
    pull,
    reinstate_at,
    report,
    spend_at,
    stripe_row,
    transfer_row,
)
from tests.ledger.support import grant_credits, mint_card, new_account

JANUARY = (at(1, 1, 0), at(2, 1, 0))
FEBRUARY = (at(2, 1, 0), at(3, 1, 0))
BASE = 8453
MAINNET = 1


@dataclass(frozen=True)
class Scenario:
    alice: int
    bob: int
    card_1: int
    card_2: int
    card_3: int
    usdc_1: int
    grant_1: int


def two_periods(engine: Engine) -> Scenario:
    """Alice buys by card and gets a grant; Bob deposits USDC on two chains. January and February:

    January: Alice's card lots C1 (1,000) and C2 (500, expiring 20 January), grant G1 (300, expiring 31 March);
    Bob's USDC lot U1 (2,500 on Base). Alice spends 200 (from C2), Bob captures 150 of a 400 hold (from U1), C2's
    300 left expire on the 21st, and 200 of C1 are refunded (from its remainder).
    February: Alice spends 900 (G1's 300, then 600 of C1); a refund of 500 on C1 takes its last 200 and books 300
    of debt; a won dispute reinstates 100 (cancelling debt); C3 (1,000) repays the remaining 200 of debt; a lost
    dispute of 250 on C2 takes expired credits back from breakage; a debit adjustment of 50 (from C3); Bob deposits
    1,000 on mainnet and gets a credit adjustment of 40.
    """
    alice = new_account(engine, "alice", now=at(1, 1, 0))
    bob = new_account(engine, "bob", now=at(1, 1, 0))
    c1 = mint_card(engine, alice, 1_000, at=at(1, 5, 10))
    c2 = mint_card(engine, alice, 500, at=at(1, 10), expires_at=at(1, 20))
    u1 = mint_usdc(engine, bob, 2_500, chain_id=BASE, when=at(1, 12))
    g1 = grant_credits(engine, alice, 300, at=at(1, 14), expires_at=at(3, 31))
    spend_at(engine, alice, 200, at(1, 15))
    hold_and_capture(engine, bob, 400, 150, at(1, 16, 9))
    assert expire_at(engine, at(1, 21)).credits_expired == 300
    claw(engine, c1.lot_id, 200, at(1, 25))

    spend_at(engine, alice, 900, at(2, 3))
    assert claw(engine, c1.lot_id, 500, at(2, 10)).debt_credits == 300
    assert reinstate_at(engine, c1.lot_id, 100, at(2, 12)).debt_credits == 100
    c3 = mint_card(engine, alice, 1_000, at=at(2, 15))
    assert c3.debt_repaid_credits == 200
    assert claw(engine, c2.lot_id, 250, at(2, 18)).from_breakage_credits == 250
    adjust_down(engine, alice, 50, at(2, 19))
    mint_usdc(engine, bob, 1_000, chain_id=MAINNET, when=at(2, 20))
    adjust_up(engine, bob, 40, at(2, 26))
    return Scenario(alice, bob, c1.lot_id, c2.lot_id, c3.lot_id, u1.lot_id, g1.lot_id)


def external_records(engine: Engine) -> None:
    """Stripe's balance transactions and the chains' Transfers for both months, and the pulls that fetched them:
    January fully pulled on both rails; February's Stripe pull still running, and only mainnet re-scanned."""
    stripe_row(engine, category="charge", amount_cents=1_000, fee_cents=59, when=at(1, 5, 10))
    stripe_row(engine, category="charge", amount_cents=500, fee_cents=45, when=at(1, 10))
    stripe_row(engine, category="refund", amount_cents=-200, when=at(1, 25))
    stripe_row(engine, category="payout", amount_cents=-1_000, when=at(1, 28), type_="payout")
    stripe_row(engine, category="charge", amount_cents=700, fee_cents=40, when=at(1, 29), currency="eur")
    stripe_row(engine, category="dispute", amount_cents=-250, fee_cents=1_500, when=at(2, 9), type_="adjustment")
    stripe_row(engine, category="refund", amount_cents=-500, when=at(2, 10))
    stripe_row(engine, category="dispute_reversal", amount_cents=100, when=at(2, 12), type_="adjustment")
    stripe_row(engine, category="charge", amount_cents=1_000, fee_cents=59, when=at(2, 15), type_="payment")
    stripe_row(engine, category="charge", amount_cents=2_500, fee_cents=100, when=at(3, 1, 0))
    pull(engine, "stripe:balance_transactions", JANUARY)
    pull(engine, "stripe:balance_transactions", FEBRUARY, complete=False)

    transfer_row(engine, chain_id=BASE, block_number=90, amount_usdc_units=5_000_000)
    transfer_row(engine, chain_id=BASE, block_number=150, amount_usdc_units=25_000_000)
    transfer_row(engine, chain_id=BASE, block_number=250, amount_usdc_units=7_000_000)
    transfer_row(engine, chain_id=MAINNET, block_number=1_500, amount_usdc_units=10_000_000)
    transfer_row(engine, chain_id=MAINNET, block_number=2_000, amount_usdc_units=3_000_000)
    mid_january = at(1, 16, 0)
    pull(engine, f"chain:{BASE}", (JANUARY[0], mid_january), details={"from_block": 100, "to_block": 149})
    pull(engine, f"chain:{BASE}", (mid_january, JANUARY[1]), details={"from_block": 150, "to_block": 199})
    pull(engine, f"chain:{MAINNET}", FEBRUARY, details={"from_block": 1_000, "to_block": 1_999})


# --- the ledger's figures ------------------------------------------------------------------------------------


def test_january_figures_per_rail(engine):
    two_periods(engine)

    card = report(engine, "card", JANUARY)
    usdc = report(engine, "usdc", JANUARY)
    grant = report(engine, "grant", JANUARY)
    everything = report(engine, "all", JANUARY)

    assert card.ledger == LedgerFigures(
        credits_minted=1_500,
        credits_spent=200,
        credits_expired=300,
        credits_clawed_back=200,
        credits_clawed_back_gross=200,
        credits_clawed_back_from_remaining=200,
        liability_at_end_credits=800,
    )
    assert card.expiry_schedule == (ExpiryMonth("2026-01", 800),)
    assert usdc.ledger == LedgerFigures(credits_minted=2_500, credits_spent=150, liability_at_end_credits=2_350)
    assert usdc.expiry_schedule == (ExpiryMonth("2026-01", 2_350),)
    assert grant.ledger == LedgerFigures(
        credits_minted=300, credits_promotional_granted=300, liability_at_end_credits=300
    )
    assert grant.expiry_schedule == (ExpiryMonth("2025-03", 300),)
    assert everything.ledger == LedgerFigures(
        credits_minted=4_300,
        credits_promotional_granted=300,
        credits_spent=350,
        credits_expired=300,
        credits_clawed_back=200,
        credits_clawed_back_gross=200,
        credits_clawed_back_from_remaining=200,
        liability_at_end_credits=3_450,
    )
    assert everything.expiry_schedule == (ExpiryMonth("2025-03", 300), ExpiryMonth("2026-01", 3_150))


def test_february_figures_count_clawbacks_from_breakage_and_into_debt(engine):
    two_periods(engine)

    card = report(engine, "card", FEBRUARY)
    everything = report(engine, "all", FEBRUARY)

    assert card.ledger == LedgerFigures(
        credits_minted=1_000,
        credits_debt_repaid=200,
        credits_spent=600,
        credits_clawed_back=650,
        credits_clawed_back_gross=750,
        credits_clawed_back_from_remaining=200,
        credits_clawed_back_from_breakage=250,
        credits_clawed_back_into_debt=300,
        credits_reinstated=100,
        credits_reinstated_debt_cancelled=100,
        credits_debit_adjusted=50,
        liability_at_start_credits=800,
        liability_at_end_credits=750,
    )
    assert card.expiry_schedule == (ExpiryMonth("2026-02", 750),)
    assert report(engine, "grant", FEBRUARY).ledger == LedgerFigures(credits_spent=300, liability_at_start_credits=300)
    assert report(engine, "grant", FEBRUARY).expiry_schedule == ()
    assert report(engine, "adjustment", FEBRUARY).ledger == LedgerFigures(
        credits_minted=40, liability_at_end_credits=40
    )
    assert everything.ledger == LedgerFigures(
        credits_minted=2_040,
        credits_debt_repaid=200,
        credits_spent=900,
        credits_clawed_back=650,
        credits_clawed_back_gross=750,
        credits_clawed_back_from_remaining=200,
        credits_clawed_back_from_breakage=250,
        credits_clawed_back_into_debt=300,
        credits_reinstated=100,
        credits_reinstated_debt_cancelled=100,
        credits_debit_adjusted=50,
        liability_at_start_credits=3_450,
        liability_at_end_credits=4_140,
    )
    assert everything.expiry_schedule == (ExpiryMonth("2026-01", 2_350), ExpiryMonth("2026-02", 1_790))


def rolled_forward(figures: LedgerFigures) -> int:
    return (
        figures.liability_at_start_credits
        + figures.credits_minted
        - figures.credits_debt_repaid
        - figures.credits_spent
        - figures.credits_expired
        - figures.credits_clawed_back_from_remaining
        + figures.credits_reinstated_to_remaining
        - figures.credits_debit_adjusted
    )


@pytest.mark.parametrize("period", [JANUARY, FEBRUARY], ids=["january", "february"])
def test_usdc_card_grant_and_adjustment_lots_are_kept_apart_and_add_up_to_all(engine, period):
    two_periods(engine)

    rails = {rail: report(engine, rail, period) for rail in ("card", "usdc", "grant", "adjustment", "all")}

    for name in (f.name for f in fields(LedgerFigures)):
        parts = sum(getattr(rails[rail].ledger, name) for rail in ("card", "usdc", "grant", "adjustment"))
        assert parts == getattr(rails["all"].ledger, name), name
    for rail, figures in rails.items():
        assert rolled_forward(figures.ledger) == figures.ledger.liability_at_end_credits, rail
        assert sum(month.credits for month in figures.expiry_schedule) == figures.ledger.liability_at_end_credits
    assert rails["card"].ledger.credits_promotional_granted == 0
    assert rails["usdc"].ledger.credits_promotional_granted == 0


def test_a_usdc_report_can_be_narrowed_to_one_chain(engine):
    two_periods(engine)

    base = report(engine, f"usdc:{BASE}", FEBRUARY)
    mainnet = report(engine, f"usdc:{MAINNET}", FEBRUARY)
    both = report(engine, "usdc", FEBRUARY)

    assert base.ledger == LedgerFigures(liability_at_start_credits=2_350, liability_at_end_credits=2_350)
    assert mainnet.ledger == LedgerFigures(credits_minted=1_000, liability_at_end_credits=1_000)
    assert mainnet.expiry_schedule == (ExpiryMonth("2026-02", 1_000),)
    assert both.ledger == LedgerFigures(
        credits_minted=1_000, liability_at_start_credits=2_350, liability_at_end_credits=3_350
    )
    assert both.expiry_schedule == (ExpiryMonth("2026-01", 2_350), ExpiryMonth("2026-02", 1_000))
    assert report(engine, "usdc:84", FEBRUARY).ledger == LedgerFigures()


def test_a_past_period_report_does_not_change_with_later_activity(engine):
    scenario = two_periods(engine)
    external_records(engine)
    rails = ("card", "usdc", f"usdc:{BASE}", "grant", "adjustment", "all")
    before = {
        (rail, period): report(engine, rail, period).as_dict() for rail in rails for period in (JANUARY, FEBRUARY)
    }

    spend_at(engine, scenario.alice, 100, at(3, 5))
    claw(engine, scenario.card_3, 300, at(3, 10))
    hold_and_capture(engine, scenario.bob, 500, 500, at(3, 12))
    assert expire_at(engine, at(3, 1, 0, year=2026)).credits_expired > 0
    reinstate_at(engine, scenario.card_3, 100, at(3, 2, year=2026))
    mint_card(engine, scenario.alice, 500, at=at(3, 3, year=2026))

    after = {(rail, period): report(engine, rail, period).as_dict() for rail in rails for period in (JANUARY, FEBRUARY)}
    assert after == before
    march = report(engine, "card", (FEBRUARY[1], at(4, 1, 0)))
    assert march.ledger.liability_at_start_credits == 750
    assert march.ledger.credits_spent == 100
    assert march.ledger.credits_clawed_back == 300


def test_the_expiry_schedule_groups_the_remainder_by_utc_month_as_of_the_period_end(engine):
    account = new_account(engine, now=at(1, 1, 0))
    mint_card(engine, account, 100, at=at(1, 3))  # expires 3 January 2026
    mint_card(engine, account, 200, at=at(1, 28))  # expires 28 January 2026
    mint_card(engine, account, 400, at=at(2, 2))  # expires 2 February 2026
    # 23:00 UTC on 30 June, though 01:00 on 1 July where it was written.
    grant_credits(
        engine, account, 50, at=at(1, 4), expires_at=datetime(2025, 7, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    )
    grant_credits(engine, account, 60, at=at(1, 4), expires_at=at(7, 1, 0))
    # Past its expiry at the period's end, and the expiry job has not run: overdue, in its own month.
    mint_card(engine, account, 70, at=at(1, 2), expires_at=at(2, 10))
    # Not from the overdue lot (spends never draw expired credits): the June grant's 50, then 40 of July's.
    spend_at(engine, account, 90, at(2, 20))
    mint_card(engine, account, 1_000, at=at(3, 1, 0))  # after the period: not in it
    spend_at(engine, account, 100, at(3, 2))  # after the period: does not reduce it

    february = report(engine, "all", FEBRUARY)

    assert february.expiry_schedule == (
        ExpiryMonth("2025-02", 70),
        ExpiryMonth("2025-07", 20),
        ExpiryMonth("2026-01", 300),
        ExpiryMonth("2026-02", 400),
    )
    assert february.ledger.liability_at_end_credits == 790
    assert report(engine, "all", JANUARY).expiry_schedule == (
        ExpiryMonth("2025-02", 70),
        ExpiryMonth("2025-06", 50),
        ExpiryMonth("2025-07", 60),
        ExpiryMonth("2026-01", 300),
    )


def test_promotional_grants_are_reported_under_grant_and_all_only(engine):
    account = new_account(engine, now=at(1, 1, 0))
    grant_credits(engine, account, 250, at=at(1, 7))
    grant_credits(engine, account, 75, at=at(2, 7))
    mint_card(engine, account, 500, at=at(1, 8))

    assert report(engine, "grant", JANUARY).ledger.credits_promotional_granted == 250
    assert report(engine, "all", JANUARY).ledger.credits_promotional_granted == 250
    assert report(engine, "all", JANUARY).ledger.credits_minted == 750
    assert report(engine, "card", JANUARY).ledger.credits_promotional_granted == 0
    assert report(engine, "grant", FEBRUARY).ledger.credits_promotional_granted == 75
    assert report(engine, "all", (JANUARY[0], FEBRUARY[1])).ledger.credits_promotional_granted == 325


# --- external figures ----------------------------------------------------------------------------------------


def test_card_external_figures_come_from_the_periods_balance_transactions(engine):
    two_periods(engine)
    external_records(engine)

    january = report(engine, "card", JANUARY)
    february = report(engine, "card", FEBRUARY)

    assert january.card == CardExternal(
        complete=True,
        balance_transactions=3,
        gross_cents=1_500,
        refunds_cents=200,
        disputes_cents=0,
        fees_cents=104,
        net_cents=1_196,
    )
    assert january.external_complete
    assert january.usdc is None
    assert february.card == CardExternal(
        complete=False,
        balance_transactions=4,
        gross_cents=1_000,
        refunds_cents=500,
        disputes_cents=150,
        fees_cents=1_559,
        net_cents=-1_209,
    )
    assert not february.external_complete
    card = february.card
    assert card.net_cents == card.gross_cents - card.refunds_cents - card.disputes_cents - card.fees_cents


def test_usdc_external_figures_come_from_the_block_ranges_the_pulls_scanned(engine):
    two_periods(engine)
    external_records(engine)

    january = report(engine, "usdc", JANUARY)
    february = report(engine, "usdc", FEBRUARY)

    assert january.usdc == UsdcExternal(
        complete=True,
        transfers=1,
        gross_usdc_units=25_000_000,
        net_usdc_units=25_000_000,
        chains=(ChainExternal(BASE, True, ((100, 199),), 1, 25_000_000),),
    )
    assert january.external_complete
    assert january.card is None
    # Base was credited by February but not re-scanned for it; mainnet was.
    assert february.usdc == UsdcExternal(
        complete=False,
        transfers=1,
        gross_usdc_units=10_000_000,
        net_usdc_units=10_000_000,
        chains=(ChainExternal(MAINNET, True, ((1_000, 1_999),), 1, 10_000_000), ChainExternal(BASE, False)),
    )
    mainnet = report(engine, f"usdc:{MAINNET}", FEBRUARY)
    assert mainnet.external_complete
    assert mainnet.usdc is not None
    assert mainnet.usdc.chains == (ChainExternal(MAINNET, True, ((1_000, 1_999),), 1, 10_000_000),)


def test_all_rails_carry_both_external_sources_and_grants_none(engine):
    two_periods(engine)
    external_records(engine)

    january = report(engine, "all", JANUARY)
    grant = report(engine, "grant", FEBRUARY)

    assert january.card is not None
    assert january.usdc is not None
    assert (january.card.gross_cents, january.usdc.gross_usdc_units) == (1_500, 25_000_000)
    assert january.external_complete
    assert not report(engine, "all", FEBRUARY).external_complete
    assert (grant.card, grant.usdc, grant.external_complete) == (None, None, True)


def test_a_period_not_fully_pulled_is_not_complete(engine):
    external_records(engine)

    # January's Stripe pull is complete, February's is still running and March was never pulled.
    with unit_of_work(engine) as session:
        quarter = period_report(session, rail="card", period_start=JANUARY[0], period_end=at(4, 1, 0))
    assert quarter.card is not None
    assert not quarter.card.complete
    assert quarter.card.gross_cents == 5_000
    # Each half of January on Base is a complete pull of its own.
    assert report(engine, f"usdc:{BASE}", (JANUARY[0], at(1, 16, 0))).external_complete


# --- empty periods, CSV and validation -----------------------------------------------------------------------


def test_an_empty_period_gives_an_empty_valid_report(engine):
    empty = report(engine, "all", (at(1, 1, 0, year=2030), at(2, 1, 0, year=2030)))

    assert empty.ledger == LedgerFigures()
    assert empty.expiry_schedule == ()
    assert empty.card == CardExternal(complete=False)
    assert empty.usdc == UsdcExternal(complete=True)
    assert not empty.external_complete
    rows = list(csv.reader(io.StringIO(period_report_csv(empty))))
    assert rows[0] == ["section", "name", "value"]
    assert all(len(row) == 3 for row in rows)
    assert {row[2] for row in rows if row[0] == "ledger"} == {"0"}
    assert empty.as_dict()["expiry_schedule"] == []


def parsed(csv_text: str) -> dict[tuple[str, str], str]:
    reader = csv.DictReader(io.StringIO(csv_text))
    assert reader.fieldnames == ["section", "name", "value"]
    values: dict[tuple[str, str], str] = {}
    for row in reader:
        assert (row["section"], row["name"]) not in values
        values[(row["section"], row["name"])] = row["value"]
    return values


def as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_the_period_report_csv_round_trips_to_its_json(engine):
    two_periods(engine)
    external_records(engine)
    data = report(engine, "all", FEBRUARY).as_dict()

    values = parsed(period_report_csv(report(engine, "all", FEBRUARY)))

    expected = {
        ("report", "rail"): "all",
        ("report", "period_start"): "2025-02-01T00:00:00+00:00",
        ("report", "period_end"): "2025-03-01T00:00:00+00:00",
        ("report", "external_complete"): "false",
    }
    expected |= {("external_card", name): as_text(v) for name, v in data["external"]["card"].items()}
    usdc = data["external"]["usdc"]
    expected |= {("external_usdc", name): as_text(v) for name, v in usdc.items() if name != "chains"}
    for chain in usdc["chains"]:
        section = f"external_usdc:{chain['chain_id']}"
        expected[(section, "complete")] = as_text(chain["complete"])
        expected[(section, "block_ranges")] = ";".join(f"{first}-{last}" for first, last in chain["block_ranges"])
        expected[(section, "transfers")] = str(chain["transfers"])
        expected[(section, "gross_usdc_units")] = str(chain["gross_usdc_units"])
    expected |= {("ledger", name): str(v) for name, v in data["ledger"].items()}
    expected |= {("x402", name): str(v) for name, v in data["x402"].items()}
    expected |= {("expiry_schedule_credits", m["month"]): str(m["credits"]) for m in data["expiry_schedule"]}
    assert values == expected
    assert values[("external_usdc:1", "block_ranges")] == "1000-1999"
    assert values[("ledger", "credits_clawed_back")] == "650"
    assert values[("expiry_schedule_credits", "2026-02")] == "1790"


@pytest.mark.parametrize(
    ("rail", "start", "end"),
    [
        ("bitcoin", JANUARY[0], JANUARY[1]),
        ("usdc:base", JANUARY[0], JANUARY[1]),
        ("card", JANUARY[1], JANUARY[0]),
        ("card", JANUARY[0], JANUARY[0]),
        ("card", datetime(2025, 1, 1), JANUARY[1]),
    ],
)
def test_a_bad_rail_or_period_is_refused(engine, rail, start, end):
    with unit_of_work(engine) as session, pytest.raises(InvalidRequest):
        period_report(session, rail=rail, period_start=start, period_end=end)


def test_period_bounds_in_another_time_zone_are_read_as_the_same_instants(engine):
    two_periods(engine)
    plus_two = timezone(timedelta(hours=2))

    shifted = report(engine, "all", (JANUARY[0].astimezone(plus_two), JANUARY[1].astimezone(plus_two)))

    assert shifted.as_dict() == report(engine, "all", JANUARY).as_dict()
    assert shifted.period_start.tzinfo == UTC


# --- the trial balance ---------------------------------------------------------------------------------------


def entry_balances(engine: Engine, when: datetime) -> dict[int, int]:
    """Every account's balance at ``when``, summed one entry at a time: the yardstick."""
    with unit_of_work(engine) as session:
        e = repo.entries
        balances = {int(i): 0 for i in session.execute(select(repo.accounts.c.id)).scalars()}
        for account_id, amount, created_at in session.execute(
            select(e.c.account_id, e.c.amount_credits, e.c.created_at)
        ):
            if created_at <= when:
                balances[account_id] += amount
        return balances


def test_the_trial_balance_sums_to_zero_and_matches_the_entries_at_a_past_instant(engine):
    scenario = two_periods(engine)
    end_of_january = JANUARY[1] - timedelta(microseconds=1)

    with unit_of_work(engine) as session:
        january = trial_balance(session, at=end_of_january)
        accounts = list(iter_trial_balance(session, at=end_of_january, page_size=2))
        february = trial_balance(session, at=FEBRUARY[1])

    assert january.total_credits == 0
    assert january.balanced
    system = {account.code: account.balance_credits for account in january.system_accounts}
    assert system == {
        "funding:card": -1_500,
        "revenue:usage": 350,
        "breakage": 300,
        "clawbacks": 200,
        "promotions": -300,
        "adjustments": 0,
        f"funding:usdc:{BASE}": -2_500,
        f"funding:usdc:{MAINNET}": 0,
    }
    customers = {a.account_id: a.balance_credits for a in accounts if a.kind == "customer"}
    assert customers == {scenario.alice: 1_100, scenario.bob: 2_350}
    assert {a.account_id: a.balance_credits for a in accounts} == entry_balances(engine, end_of_january)
    totals = {total.kind: (total.accounts, total.balance_credits) for total in january.totals}
    assert totals == {"customer": (2, 3_450), "system": (8, -3_450)}
    # Customers hold what the lots still hold, less their debt (none at either month's end).
    assert totals["customer"][1] == report(engine, "all", JANUARY).ledger.liability_at_end_credits
    assert february.total_credits == 0
    customers_february = {t.kind: t.balance_credits for t in february.totals}["customer"]
    assert customers_february == report(engine, "all", FEBRUARY).ledger.liability_at_end_credits == 4_140
    breakage = next(a for a in february.system_accounts if a.account_id == SystemAccount.BREAKAGE)
    assert breakage.balance_credits == 50


def test_the_trial_balance_counts_entries_made_at_the_instant_itself_and_debt_apart(engine):
    scenario = two_periods(engine)

    with unit_of_work(engine) as session:
        first_mint = trial_balance(session, at=at(1, 5, 10))
        in_debt = trial_balance(session, at=at(2, 11))
        alice = next(
            a for a in iter_trial_balance(session, at=at(2, 11), kind="customer") if a.account_id == scenario.alice
        )

    funding = {a.code: a.balance_credits for a in first_mint.system_accounts}["funding:card"]
    assert funding == -1_000
    # On 11 February Alice owes 300 after the refund took more than C1 had left: her balance is below her lots.
    assert alice.balance_credits == -300
    assert in_debt.balanced
    assert entry_balances(engine, at(2, 11))[scenario.alice] == -300


def test_the_trial_balance_pages_by_account_id(engine):
    for number in range(5):
        new_account(engine, f"customer {number}", now=at(1, 1, 0))
    later = new_account(engine, "opened later", now=at(6, 1))

    with unit_of_work(engine) as session:
        first = trial_balance_page(session, at=JANUARY[1], limit=4, kind="customer")
        second = trial_balance_page(session, at=JANUARY[1], after_id=first.next_after_id or 0, limit=4, kind="customer")
        everything = list(iter_trial_balance(session, at=JANUARY[1], page_size=3))
        totals = trial_balance(session, at=JANUARY[1])

    assert len(first.accounts) == 4
    assert first.next_after_id == first.accounts[-1].account_id
    assert len(second.accounts) == 1
    assert second.next_after_id is None
    ids = [a.account_id for a in everything]
    assert ids == sorted(ids)
    assert later not in ids
    assert len(ids) == 5 + 6
    assert {t.kind: t.accounts for t in totals.totals} == {"customer": 5, "system": 6}
    assert second.as_dict()["accounts"][0]["balance_credits"] == 0


def test_the_trial_balance_csv_round_trips(engine):
    scenario = two_periods(engine)
    odd_name = new_account(engine, 'Acme, "the" company', now=at(1, 2))
    mint_card(engine, odd_name, 123, at=at(2, 2))

    with unit_of_work(engine) as session:
        text = trial_balance_csv(session, at=FEBRUARY[1], page_size=3)
        balance = trial_balance(session, at=FEBRUARY[1])
        accounts = list(iter_trial_balance(session, at=FEBRUARY[1]))

    rows = list(csv.DictReader(io.StringIO(text)))
    account_rows = [row for row in rows if row["row"] == "account"]
    assert [
        (int(r["account_id"]), r["code"] or None, r["kind"], r["name"], int(r["balance_credits"])) for r in account_rows
    ] == [(a.account_id, a.code, a.kind, a.name, a.balance_credits) for a in accounts]
    assert next(r for r in account_rows if int(r["account_id"]) == odd_name)["name"] == 'Acme, "the" company'
    assert next(r for r in account_rows if int(r["account_id"]) == scenario.alice)["balance_credits"] == "750"
    kind_totals = {r["kind"]: (int(r["accounts"]), int(r["balance_credits"])) for r in rows if r["row"] == "kind_total"}
    assert kind_totals == {t.kind: (t.accounts, t.balance_credits) for t in balance.totals}
    (total,) = [r for r in rows if r["row"] == "total"]
    assert (int(total["accounts"]), int(total["balance_credits"])) == (len(accounts), 0)
    assert sum(int(r["balance_credits"]) for r in account_rows) == 0


def test_the_trial_balance_as_json(engine):
    two_periods(engine)

    with unit_of_work(engine) as session:
        data = trial_balance(session, at=JANUARY[1]).as_dict()

    assert data["at"] == "2025-02-01T00:00:00+00:00"
    assert data["balanced"] is True
    assert data["total_credits"] == 0
    assert {t["kind"]: t["balance_credits"] for t in data["totals"]} == {"customer": 3_450, "system": -3_450}
    assert {a["code"] for a in data["system_accounts"]} >= {"funding:card", "breakage", "clawbacks"}
