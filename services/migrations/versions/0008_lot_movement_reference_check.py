"""Lot movements: their references checked once per statement instead of once per row and reference.

The expiry job writes a movement for every lot it expires, thousands in one statement; three foreign keys (lot,
journal transaction, hold) checked each row on its own, a query and a row lock per row and reference, about a
quarter of the job's cost per lot. Their guarantees stay, by triggers instead of the constraints:

- inserting movements: once per statement, every lot, transaction and (where given) hold they name must exist, or
  the statement fails (SQLSTATE 23503, foreign_key_violation, as a foreign key would). Movements are immutable
  (migration 0001), so an insert is the only way a reference comes to be;
- what they name stays: journal transactions are immutable already, and lots and holds are never deleted nor
  renumbered (SQLSTATE 23001, restrict_violation). A foreign key's check locks the rows it names against such a
  change; with no such change possible, the check needs no lock.

The functions resolve table names in the schema the migration ran in (``SET search_path FROM CURRENT``), as a
foreign key refers to its table whatever the caller's search path.

On SQLite the same checks are row triggers (a failed one aborts the statement as a foreign key does); dropping the
foreign keys rebuilds the table there, so its append-only triggers are made again.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from alembic import op
from alembic.operations import BatchOperations

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (column, referred table) of each foreign key replaced.
_REFERENCES = (("lot_id", "lots"), ("transaction_id", "ledger_transactions"), ("hold_id", "holds"))
_KEPT_TABLES = ("lots", "holds")

# How SQLite's unnamed foreign keys are named for batch mode to find them.
_SQLITE_NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}

_MOVEMENT_MESSAGE = 'insert on table "lot_movements" names a row of "%s" that does not exist'
_KEPT_MESSAGE = "%s rows are never deleted nor renumbered"


def _pg_upgrade() -> list[str]:
    checks = "\n".join(
        f"""
        IF missing IS NULL THEN
            SELECT '{table} ' || m.{column} INTO missing FROM inserted_movements AS m
            WHERE m.{column} IS NOT NULL AND NOT EXISTS (SELECT FROM {table} AS r WHERE r.id = m.{column}) LIMIT 1;
        END IF;"""
        for column, table in _REFERENCES
    )
    statements = [
        f"""
        CREATE FUNCTION lot_movements_references_exist() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT
        AS $$
        DECLARE
            missing text;
        BEGIN{checks}
            IF missing IS NOT NULL THEN
                RAISE EXCEPTION 'insert on table "lot_movements" names a row that does not exist (%)', missing
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN NULL;
        END $$
        """,
        """
        CREATE TRIGGER lot_movements_references_exist AFTER INSERT ON lot_movements
        REFERENCING NEW TABLE AS inserted_movements
        FOR EACH STATEMENT EXECUTE FUNCTION lot_movements_references_exist()
        """,
        """
        CREATE FUNCTION creditrail_refuse_removal() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% rows are never deleted nor renumbered (id %)', TG_TABLE_NAME, OLD.id
                USING ERRCODE = 'restrict_violation';
        END $$
        """,
    ]
    for table in _KEPT_TABLES:
        statements += [
            f"CREATE TRIGGER {table}_kept_on_delete BEFORE DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION creditrail_refuse_removal()",
            # AFTER, so that an update leaving the id alone (every update) costs nothing: the trigger is passed
            # over without the row being read again, as a BEFORE row trigger would.
            f"CREATE TRIGGER {table}_kept_on_renumber AFTER UPDATE OF id ON {table} "
            "FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id) EXECUTE FUNCTION creditrail_refuse_removal()",
        ]
    return statements


def _pg_downgrade() -> list[str]:
    statements = []
    for table in _KEPT_TABLES:
        statements += [
            f"DROP TRIGGER IF EXISTS {table}_kept_on_renumber ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_kept_on_delete ON {table}",
        ]
    return [
        *statements,
        "DROP FUNCTION IF EXISTS creditrail_refuse_removal()",
        "DROP TRIGGER IF EXISTS lot_movements_references_exist ON lot_movements",
        "DROP FUNCTION IF EXISTS lot_movements_references_exist()",
    ]


# Migration 0001's append-only triggers on lot_movements, which a rebuild of the table drops.
_SQLITE_IMMUTABLE = {f"lot_movements_no_{action.lower()}": action for action in ("UPDATE", "DELETE")}


def _sqlite_immutable_movements() -> list[str]:
    return [
        f"CREATE TRIGGER {name} BEFORE {action} ON lot_movements "
        "BEGIN SELECT RAISE(ABORT, 'lot_movements rows are immutable'); END"
        for name, action in _SQLITE_IMMUTABLE.items()
    ]


def _sqlite_rebuild_movements(operation: Callable[[BatchOperations], None]) -> None:
    """Rebuild lot_movements through batch mode, its append-only triggers made again after."""
    for name in _SQLITE_IMMUTABLE:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("lot_movements", naming_convention=_SQLITE_NAMING) as batch_op:
        operation(batch_op)
    for statement in _sqlite_immutable_movements():
        op.execute(statement)


def _sqlite_upgrade() -> list[str]:
    statements = []
    for column, table in _REFERENCES:
        statements.append(
            f"""
            CREATE TRIGGER lot_movements_{column}_exists BEFORE INSERT ON lot_movements
            WHEN NEW.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {table} WHERE id = NEW.{column})
            BEGIN SELECT RAISE(ABORT, '{_MOVEMENT_MESSAGE % table}'); END
            """
        )
    for table in _KEPT_TABLES:
        statements += [
            f"CREATE TRIGGER {table}_kept_on_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{_KEPT_MESSAGE % table}'); END",
            f"CREATE TRIGGER {table}_kept_on_renumber BEFORE UPDATE OF id ON {table} WHEN NEW.id IS NOT OLD.id "
            f"BEGIN SELECT RAISE(ABORT, '{_KEPT_MESSAGE % table}'); END",
        ]
    return statements


def _sqlite_downgrade() -> list[str]:
    statements = [f"DROP TRIGGER IF EXISTS lot_movements_{column}_exists" for column, _ in _REFERENCES]
    for table in _KEPT_TABLES:
        statements += [f"DROP TRIGGER IF EXISTS {table}_kept_on_{event}" for event in ("renumber", "delete")]
    return statements


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column, _ in _REFERENCES:
            op.drop_constraint(f"lot_movements_{column}_fkey", "lot_movements", type_="foreignkey")
        statements = _pg_upgrade()
    else:

        def drop_foreign_keys(batch_op: BatchOperations) -> None:
            for column, table in _REFERENCES:
                batch_op.drop_constraint(f"fk_lot_movements_{column}_{table}", type_="foreignkey")

        _sqlite_rebuild_movements(drop_foreign_keys)
        statements = _sqlite_upgrade()
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _pg_downgrade():
            op.execute(statement)
        for column, table in _REFERENCES:
            op.create_foreign_key(f"lot_movements_{column}_fkey", "lot_movements", table, [column], ["id"])
        return
    for statement in _sqlite_downgrade():
        op.execute(statement)

    def add_foreign_keys(batch_op: BatchOperations) -> None:
        for column, table in _REFERENCES:
            batch_op.create_foreign_key(f"fk_lot_movements_{column}_{table}", table, [column], ["id"])

    _sqlite_rebuild_movements(add_foreign_keys)
