"""Many rows into one table in one statement: on Postgres, a JSON recordset.

A drain batch writes hundreds of sentence and timeline rows. As an executemany, each row is a
statement of its own for Postgres (parse, bind, execute: ~16 us of backend time a row in a
live-paced drain) and a parameter set for SQLAlchemy and psycopg to process in Python. As one
``INSERT ... SELECT FROM json_to_recordset(%(rows)s::json)`` the batch is one statement whose
text depends only on the table and columns (prepared once per connection), one parameter that
orjson writes in C, and one unpacking in C on the server: the receiver's inbox insert does the
same (worker/inbox/store.py). Other databases, and rows JSON cannot carry (bytes), take the
executemany.

Rows get their ids in the order given, as with the executemany: readers of the outbox walk a
transaction's events in id order, so the statement orders by the recordset's ordinality rather
than trust the scan's order.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from sqlalchemy import Dialect, LargeBinary, Table, insert
from sqlalchemy.orm import Session as DbSession

from worker.db import Base, insert_ignoring_conflicts


def insert_rows(
    db: DbSession, model: type[Base], rows: list[dict[str, Any]], *, skip_conflicts: bool = False
) -> None:
    """Insert ``rows`` (plain column values, the same keys in each) into ``model``'s table.

    With ``skip_conflicts`` a row that would break a unique constraint is left out (``ON CONFLICT
    DO NOTHING``), the others inserted.
    """
    if not rows:
        return
    table = model.__table__
    assert isinstance(table, Table)
    columns = tuple(rows[0])
    dialect = db.get_bind().dialect
    recordset = _as_json(rows) if dialect.name == "postgresql" and _json_safe(table, columns) else None
    if recordset is None:
        db.execute(insert_ignoring_conflicts(model, dialect.name) if skip_conflicts else insert(model), rows)
        return
    db.connection().exec_driver_sql(_statement(table, columns, dialect, skip_conflicts), {"rows": recordset})


def _as_json(rows: list[dict[str, Any]]) -> str | None:
    """The rows as one JSON array; None for what orjson does not write (a dict with non-string
    keys in a JSON column, an integer over 64 bits) and the executemany's serializer does."""
    try:
        return orjson.dumps(rows).decode()
    except TypeError:
        return None


@functools.cache
def _statement(table: Table, columns: tuple[str, ...], dialect: Dialect, skip_conflicts: bool) -> str:
    typed = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in columns)
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table.name} ({names}) "  # noqa: S608 - names from the model, never from data
        f"SELECT {names} FROM ROWS FROM (json_to_recordset(%(rows)s::json) AS ({typed}))"
        f" WITH ORDINALITY AS u({names}, ordinality) ORDER BY ordinality"
        + (" ON CONFLICT DO NOTHING" if skip_conflicts else "")
    )


@functools.cache
def _json_safe(table: Table, columns: tuple[str, ...]) -> bool:
    return not any(isinstance(table.c[name].type, LargeBinary) for name in columns)
