"""USDC deposits: the account reference checked once per statement instead of once per row.

The listener stores thousands of deposits per statement (one binary COPY per range scanned); a foreign key checks
each row on its own (a query and a row lock per deposit, a third of the COPY's cost). Its guarantees stay, by
triggers instead of the constraint:

- inserting deposits: once per statement, the accounts they name are locked against deletion (``FOR KEY SHARE``,
  as a foreign key's check locks them) and counted; any missing fails the statement (SQLSTATE 23503,
  foreign_key_violation, as a foreign key would). Changing a deposit's account is checked likewise, per row (it
  never happens: the account is the deposit address's);
- deleting an account, or changing its id, fails while deposits name it (checked after the row, as a foreign
  key's NO ACTION does).

The functions resolve table names in the schema the migration ran in (``SET search_path FROM CURRENT``), as a
foreign key refers to its table whatever the caller's search path.

On SQLite the same checks are row triggers (a failed one aborts the statement as a foreign key does).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_FOREIGN_KEY = "usdc_deposits_account_id_fkey"
# How SQLite's unnamed foreign key is named for batch mode to find it.
_SQLITE_NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
_SQLITE_FOREIGN_KEY = "fk_usdc_deposits_account_id_accounts"

_DEPOSIT_MESSAGE = 'insert or update on table "usdc_deposits" names an account that does not exist'
_ACCOUNT_MESSAGE = 'update or delete on table "accounts" leaves deposits of table "usdc_deposits" without their account'

_PG_UPGRADE = [
    f"""
    CREATE FUNCTION usdc_deposits_accounts_exist() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT
    AS $$
    DECLARE
        named bigint;
        locked bigint;
        missing bigint;
    BEGIN
        SELECT count(DISTINCT account_id) INTO named FROM inserted_deposits;
        SELECT count(*) INTO locked FROM (
            SELECT 1 FROM accounts WHERE id IN (SELECT account_id FROM inserted_deposits) FOR KEY SHARE
        ) AS found;
        IF locked <> named THEN
            SELECT account_id INTO missing FROM inserted_deposits AS d
            WHERE NOT EXISTS (SELECT FROM accounts AS a WHERE a.id = d.account_id) LIMIT 1;
            RAISE EXCEPTION '{_DEPOSIT_MESSAGE} (account %)', missing USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER usdc_deposits_accounts_exist AFTER INSERT ON usdc_deposits
    REFERENCING NEW TABLE AS inserted_deposits
    FOR EACH STATEMENT EXECUTE FUNCTION usdc_deposits_accounts_exist()
    """,
    f"""
    CREATE FUNCTION usdc_deposit_account_exists() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT
    AS $$
    BEGIN
        PERFORM FROM accounts WHERE id = NEW.account_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION '{_DEPOSIT_MESSAGE} (account %)', NEW.account_id USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER usdc_deposit_account_exists AFTER UPDATE OF account_id ON usdc_deposits
    FOR EACH ROW WHEN (NEW.account_id IS DISTINCT FROM OLD.account_id)
    EXECUTE FUNCTION usdc_deposit_account_exists()
    """,
    f"""
    CREATE FUNCTION accounts_keep_usdc_deposits() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT
    AS $$
    BEGIN
        IF EXISTS (SELECT FROM usdc_deposits WHERE account_id = OLD.id) THEN
            RAISE EXCEPTION '{_ACCOUNT_MESSAGE} (account %)', OLD.id USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER accounts_keep_usdc_deposits_on_delete AFTER DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_keep_usdc_deposits()
    """,
    """
    CREATE TRIGGER accounts_keep_usdc_deposits_on_update AFTER UPDATE OF id ON accounts
    FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id) EXECUTE FUNCTION accounts_keep_usdc_deposits()
    """,
]
_PG_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS accounts_keep_usdc_deposits_on_update ON accounts",
    "DROP TRIGGER IF EXISTS accounts_keep_usdc_deposits_on_delete ON accounts",
    "DROP FUNCTION IF EXISTS accounts_keep_usdc_deposits()",
    "DROP TRIGGER IF EXISTS usdc_deposit_account_exists ON usdc_deposits",
    "DROP FUNCTION IF EXISTS usdc_deposit_account_exists()",
    "DROP TRIGGER IF EXISTS usdc_deposits_accounts_exist ON usdc_deposits",
    "DROP FUNCTION IF EXISTS usdc_deposits_accounts_exist()",
]

_SQLITE_UPGRADE = [
    f"""
    CREATE TRIGGER usdc_deposits_account_on_insert BEFORE INSERT ON usdc_deposits
    WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE id = NEW.account_id)
    BEGIN SELECT RAISE(ABORT, '{_DEPOSIT_MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER usdc_deposits_account_on_update BEFORE UPDATE OF account_id ON usdc_deposits
    WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE id = NEW.account_id)
    BEGIN SELECT RAISE(ABORT, '{_DEPOSIT_MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER accounts_keep_usdc_deposits_on_delete BEFORE DELETE ON accounts
    WHEN EXISTS (SELECT 1 FROM usdc_deposits WHERE account_id = OLD.id)
    BEGIN SELECT RAISE(ABORT, '{_ACCOUNT_MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER accounts_keep_usdc_deposits_on_update BEFORE UPDATE OF id ON accounts
    WHEN NEW.id IS NOT OLD.id AND EXISTS (SELECT 1 FROM usdc_deposits WHERE account_id = OLD.id)
    BEGIN SELECT RAISE(ABORT, '{_ACCOUNT_MESSAGE}'); END
    """,
]
_SQLITE_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS accounts_keep_usdc_deposits_on_update",
    "DROP TRIGGER IF EXISTS accounts_keep_usdc_deposits_on_delete",
    "DROP TRIGGER IF EXISTS usdc_deposits_account_on_update",
    "DROP TRIGGER IF EXISTS usdc_deposits_account_on_insert",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(_PG_FOREIGN_KEY, "usdc_deposits", type_="foreignkey")
        statements = _PG_UPGRADE
    else:
        with op.batch_alter_table("usdc_deposits", naming_convention=_SQLITE_NAMING) as batch_op:
            batch_op.drop_constraint(_SQLITE_FOREIGN_KEY, type_="foreignkey")
        statements = _SQLITE_UPGRADE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_DOWNGRADE:
            op.execute(statement)
        op.create_foreign_key(_PG_FOREIGN_KEY, "usdc_deposits", "accounts", ["account_id"], ["id"])
        return
    for statement in _SQLITE_DOWNGRADE:
        op.execute(statement)
    with op.batch_alter_table("usdc_deposits") as batch_op:
        batch_op.create_foreign_key(_SQLITE_FOREIGN_KEY, "accounts", ["account_id"], ["id"])
