"""The ledger over HTTP: a customer's balance, lots, transactions, charges, holds and budgets (under /v1), and the
admin's accounts, grants, adjustments and invariant check (under /v1/admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from services.api.deps import AdminKey, CustomerKey, CustomerOrSession, IdempotencyKey, KeysDep, SessionDep
from services.api.pages import Cursor, id_cursor, page_of
from services.api.principal import Principal
from services.api.types import Id, Instant, QueryBool, Text
from services.ledger import balance, budgets, holds, invariants, minting, spending
from services.ledger.accounts import create_customer_account, update_email
from services.ledger.schemas import (
    AccountAdminUpdate,
    AccountIn,
    AccountOut,
    AccountPage,
    AccountUpdate,
    AdjustmentIn,
    BalanceOut,
    BudgetIn,
    BudgetOut,
    BudgetPage,
    BudgetUpdate,
    CaptureIn,
    ChargeIn,
    ChargeOut,
    Draw,
    GrantIn,
    HoldIn,
    HoldOut,
    InvariantReport,
    LotOut,
    LotPage,
    MintOut,
    TransactionOut,
    TransactionPage,
    ViolationOut,
)

router = APIRouter(prefix="/v1", tags=["credits"])
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])

REPLAYED_HEADER = "Idempotent-Replayed"


def _account(principal: Principal) -> int:
    assert principal.account_id is not None  # guaranteed by CustomerKey and CustomerOrSession
    return principal.account_id


def _balance_out(view: balance.Balance) -> BalanceOut:
    return BalanceOut.model_validate(view, from_attributes=True)


@router.get("/balance")
def get_balance(session: SessionDep, principal: CustomerOrSession) -> BalanceOut:
    return _balance_out(balance.get_balance(session, _account(principal)))


@router.get("/account")
def get_own_account(session: SessionDep, principal: CustomerOrSession) -> AccountOut:
    return AccountOut.model_validate(balance.get_account(session, _account(principal)), from_attributes=True)


@router.patch("/account")
def update_own_account(body: AccountUpdate, session: SessionDep, principal: CustomerOrSession) -> AccountOut:
    """The customer's email for receipts; a change makes it unverified."""
    update_email(session, _account(principal), email=body.email)
    return AccountOut.model_validate(balance.get_account(session, _account(principal)), from_attributes=True)


@router.get("/lots")
def list_lots(
    session: SessionDep,
    principal: CustomerOrSession,
    include_spent: QueryBool = False,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> LotPage:
    """The account's lots, oldest first (with ``include_spent``, those used up too)."""
    rows = balance.list_lots(
        session, _account(principal), include_spent=include_spent, limit=limit + 1, after_id=id_cursor(cursor) or 0
    )
    lots = [LotOut.model_validate(row, from_attributes=True) for row in rows]
    return page_of(lots, limit, lambda lot: lot.id)


@router.get("/transactions")
def list_transactions(
    session: SessionDep,
    principal: CustomerOrSession,
    kind: Annotated[Text | None, Query(max_length=32)] = None,
    since: Instant | None = None,
    until: Instant | None = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TransactionPage:
    """The account's journal transactions, newest first."""
    rows = balance.list_transactions(
        session,
        _account(principal),
        kind=kind,
        since=since,
        until=until,
        before_id=id_cursor(cursor),
        limit=limit + 1,
    )
    transactions = [TransactionOut.model_validate(row, from_attributes=True) for row in rows]
    return page_of(transactions, limit, lambda transaction: transaction.id)


@router.post("/charges", status_code=status.HTTP_201_CREATED)
def create_charge(
    body: ChargeIn, session: SessionDep, principal: CustomerKey, key: IdempotencyKey, response: Response
) -> ChargeOut:
    result = spending.spend(
        session,
        account_id=_account(principal),
        amount_credits=body.amount_credits,
        idempotency_key=key,
        api_key_id=principal.key_id,
        project=body.project,
        description=body.description,
    )
    if result.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return ChargeOut(
        transaction_id=result.transaction_id,
        amount_credits=result.amount_credits,
        draws=[Draw(lot_id=lot_id, amount_credits=credits) for lot_id, credits in result.draws],
        created_at=result.created_at,
        replayed=result.replayed,
    )


def _hold_out(view: holds.HoldView, response: Response | None = None) -> HoldOut:
    if response is not None and view.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return HoldOut.model_validate(view, from_attributes=True)


@router.post("/holds", status_code=status.HTTP_201_CREATED)
def create_hold(
    body: HoldIn, session: SessionDep, principal: CustomerKey, key: IdempotencyKey, response: Response
) -> HoldOut:
    view = holds.create_hold(
        session,
        account_id=_account(principal),
        amount_credits=body.amount_credits,
        idempotency_key=key,
        ttl_seconds=body.ttl_seconds,
        api_key_id=principal.key_id,
        project=body.project,
        description=body.description,
    )
    return _hold_out(view, response)


@router.get("/holds/{hold_id}")
def get_hold(hold_id: Id, session: SessionDep, principal: CustomerKey) -> HoldOut:
    return _hold_out(holds.get_hold(session, account_id=_account(principal), hold_id=hold_id))


@router.post("/holds/{hold_id}/capture")
def capture_hold(hold_id: Id, body: CaptureIn, session: SessionDep, principal: CustomerKey) -> HoldOut:
    view = holds.capture_hold(
        session, account_id=_account(principal), hold_id=hold_id, amount_credits=body.amount_credits
    )
    return _hold_out(view)


@router.post("/holds/{hold_id}/release")
def release_hold(hold_id: Id, session: SessionDep, principal: CustomerKey) -> HoldOut:
    return _hold_out(holds.release_hold(session, account_id=_account(principal), hold_id=hold_id))


@router.get("/budgets")
def list_budgets(
    session: SessionDep,
    principal: CustomerOrSession,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> BudgetPage:
    """The account's budgets, oldest first."""
    views = budgets.list_budgets(session, _account(principal), after_id=id_cursor(cursor) or 0, limit=limit + 1)
    return page_of(
        [BudgetOut.model_validate(view, from_attributes=True) for view in views], limit, lambda budget: budget.id
    )


@router.post("/budgets", status_code=status.HTTP_201_CREATED)
def create_budget(body: BudgetIn, session: SessionDep, keys: KeysDep, principal: CustomerOrSession) -> BudgetOut:
    view = budgets.create_budget(session, keys, account_id=_account(principal), **body.model_dump())
    return BudgetOut.model_validate(view, from_attributes=True)


@router.get("/budgets/{budget_id}")
def get_budget(budget_id: Id, session: SessionDep, principal: CustomerOrSession) -> BudgetOut:
    return BudgetOut.model_validate(budgets.get_budget(session, _account(principal), budget_id), from_attributes=True)


@router.patch("/budgets/{budget_id}")
def update_budget(budget_id: Id, body: BudgetUpdate, session: SessionDep, principal: CustomerOrSession) -> BudgetOut:
    view = budgets.update_budget(
        session, account_id=_account(principal), budget_id=budget_id, name=body.name, limit_credits=body.limit_credits
    )
    return BudgetOut.model_validate(view, from_attributes=True)


@router.delete("/budgets/{budget_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_budget(budget_id: Id, session: SessionDep, principal: CustomerOrSession) -> None:
    budgets.delete_budget(session, account_id=_account(principal), budget_id=budget_id)


# --- admin -------------------------------------------------------------------------------------------------


@admin_router.post("/accounts/{account_id}/grants", status_code=status.HTTP_201_CREATED)
def grant_credits(
    account_id: Id, body: GrantIn, session: SessionDep, _admin: AdminKey, key: IdempotencyKey, response: Response
) -> MintOut:
    result = minting.grant(
        session,
        account_id=account_id,
        amount_credits=body.amount_credits,
        idempotency_key=key,
        expires_at=body.expires_at,
        reason=body.reason,
    )
    if result.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return MintOut.model_validate(result, from_attributes=True)


@admin_router.post("/accounts/{account_id}/adjustments", status_code=status.HTTP_201_CREATED)
def adjust_credits(
    account_id: Id, body: AdjustmentIn, session: SessionDep, admin: AdminKey, key: IdempotencyKey, response: Response
) -> TransactionOut:
    actor = f"api_key:{admin.key_id}"
    if body.amount_credits >= 0:
        minted = minting.credit_adjustment(
            session,
            account_id=account_id,
            amount_credits=body.amount_credits,
            idempotency_key=key,
            reason=body.reason,
            actor=actor,
        )
        txn_id, replayed, amount = minted.transaction_id, minted.replayed, minted.amount_credits
    else:
        drawn = spending.debit_adjustment(
            session,
            account_id=account_id,
            amount_credits=-body.amount_credits,
            idempotency_key=key,
            reason=body.reason,
            actor=actor,
        )
        txn_id, replayed, amount = drawn.transaction_id, drawn.replayed, -drawn.amount_credits
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    txn = balance.get_transaction(session, txn_id)
    assert txn is not None  # posted (or found posted) above, in this transaction
    return TransactionOut(
        id=txn_id,
        kind=txn.kind,
        amount_credits=amount,
        created_at=txn.created_at,
        description=txn.description,
        details=txn.details,
    )


@admin_router.get("/accounts/{account_id}/balance")
def admin_balance(account_id: Id, session: SessionDep, _admin: AdminKey) -> BalanceOut:
    return _balance_out(balance.get_balance(session, account_id))


@admin_router.get("/invariants")
def check_invariants(session: SessionDep, _admin: AdminKey) -> InvariantReport:
    found = invariants.check_invariants(session)
    return InvariantReport(
        ok=not found, violations=[ViolationOut.model_validate(v, from_attributes=True) for v in found]
    )


@admin_router.post("/accounts", status_code=status.HTTP_201_CREATED)
def create_account(body: AccountIn, session: SessionDep, _admin: AdminKey) -> AccountOut:
    account_id = create_customer_account(session, name=body.name)
    return AccountOut.model_validate(balance.get_account(session, account_id), from_attributes=True)


@admin_router.get("/accounts")
def list_accounts(
    session: SessionDep,
    _admin: AdminKey,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AccountPage:
    """Customer accounts, oldest first."""
    rows = balance.list_accounts(session, id_cursor(cursor) or 0, limit + 1)
    accounts = [AccountOut.model_validate(row, from_attributes=True) for row in rows]
    return page_of(accounts, limit, lambda account: account.id)


@admin_router.patch("/accounts/{account_id}")
def update_account(account_id: Id, body: AccountAdminUpdate, session: SessionDep, _admin: AdminKey) -> AccountOut:
    """The account's email for receipts and whether it is verified (fields left out are kept)."""
    if "email" in body.model_fields_set:
        update_email(session, account_id, email=body.email, verified=body.email_verified)
    else:
        update_email(session, account_id, verified=body.email_verified)
    return AccountOut.model_validate(balance.get_account(session, account_id), from_attributes=True)
