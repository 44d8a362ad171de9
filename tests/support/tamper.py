"""Changing a database behind the pipeline's back, as an operator's own SQL or a bug would: on one
connection, with the schema's constraints off where a test needs an orphan row."""
from __future__ import annotations

from enrich.store import POSTGRESQL, Store


def tamper(store: Store, *statements: str) -> None:
    """Run ``statements`` in one transaction on one connection of ``store``, foreign keys unchecked."""
    if store.backend == POSTGRESQL:  # (no foreign key is declared there: the integrity check verifies)
        from enrich.store.postgres.connection import connect as pg_connect
        from enrich.store.postgres.connection import transaction as pg_transaction

        with pg_connect(store.location) as cur, pg_transaction(cur):
            for statement in statements:
                cur.execute(statement)
        return
    from enrich.store.sqlite.connection import connect, transaction

    with connect(store.location.path, foreign_keys=False) as cur, transaction(cur):
        for statement in statements:
            cur.execute(statement)
