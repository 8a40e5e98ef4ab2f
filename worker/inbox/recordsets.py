"""Many rows into one table in one statement: on Postgres, a JSON recordset.

A drain batch writes hundreds of sentence and timeline rows. As an executemany, each row is a
statement of its own for Postgres (parse, bind, execute: ~16 us of backend time a row in a
live-paced drain) and a parameter set for SQLAlchemy and psycopg to process in Python. As one
``INSERT ... SELECT FROM json_to_recordset(%(rows)s::json)`` the batch is one statement whose
text depends only on the table and columns (prepared once per connection), one parameter that
orjson writes in C, and one unpacking in C on the server: the receiver's inbox insert does the
same (worker/inbox/store.py). Other databases, and rows JSON cannot carry (bytes), take the
executemany.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from sqlalchemy import Dialect, LargeBinary, Table, insert
from sqlalchemy.orm import Session as DbSession

from worker.db import Base


def insert_rows(db: DbSession, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (plain column values, the same keys in each) into ``model``'s table."""
    if not rows:
        return
    table = model.__table__
    assert isinstance(table, Table)
    columns = tuple(rows[0])
    dialect = db.get_bind().dialect
    if dialect.name != "postgresql" or not _json_safe(table, columns):
        db.execute(insert(model), rows)
        return
    statement = _statement(table, columns, dialect)
    db.connection().exec_driver_sql(statement, {"rows": orjson.dumps(rows).decode()})


@functools.cache
def _statement(table: Table, columns: tuple[str, ...], dialect: Dialect) -> str:
    typed = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in columns)
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table.name} ({names}) "  # noqa: S608 - names from the model, never from data
        f"SELECT {names} FROM json_to_recordset(%(rows)s::json) AS u({typed})"
    )


@functools.cache
def _json_safe(table: Table, columns: tuple[str, ...]) -> bool:
    return not any(isinstance(table.c[name].type, LargeBinary) for name in columns)
