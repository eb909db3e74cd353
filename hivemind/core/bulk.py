"""Inserting many rows at once, without a model instance per row.

`bulk_create` builds a model instance for every row and then an INSERT with a parameter per
value: for the 10,000 placements of bench/scheduler.py that was half of the whole run. On
PostgreSQL `insert_rows` takes the primary keys from the table's sequence in one query and
sends the rows with COPY; on SQLite (the embedded default) it is `bulk_create`. Either way the
rows go in the caller's transaction, and the database checks every constraint as for an
INSERT. No model signal is sent (as with `bulk_create`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.db import connection, models

_PLAIN = (int, str, bool, float, type(None))


def insert_rows(model: type[models.Model], rows: Sequence[Mapping[str, object]]) -> list[int]:
    """Insert `rows` of `model` and return their primary keys, in order.

    Each row maps field attribute names (`node_id`, `state`) to values; every row names the
    same fields. A field no row names takes its model default (`auto_now_add` included)."""
    if not rows:
        return []
    if connection.vendor != "postgresql":
        created = model.objects.bulk_create([model(**row) for row in rows])
        return [obj.pk for obj in created]
    meta = model._meta
    named = list(rows[0])
    fields = {f.attname: f for f in meta.concrete_fields if not f.primary_key}
    unknown = [name for name in named if name not in fields]
    if unknown:
        raise ValueError(f"{meta.label} has no field {', '.join(unknown)}")
    template = model()  # the defaults, worked out once for every row
    rest = [f for name, f in fields.items() if name not in named]
    defaults = tuple(f.get_db_prep_save(f.pre_save(template, add=True), connection) for f in rest)
    named_fields = [fields[name] for name in named]
    columns = [meta.pk.column, *(f.column for f in named_fields), *(f.column for f in rest)]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [meta.db_table, meta.pk.column, len(rows)],
        )
        keys = [key for (key,) in cursor.fetchall()]
        statement = f"COPY {quote(meta.db_table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
        # The driver's own cursor (COPY is psycopg's); its errors still become Django's.
        with connection.wrap_database_errors, cursor.cursor.copy(statement) as copy:
            for key, row in zip(keys, rows, strict=True):
                values = [
                    value if isinstance(value, _PLAIN) else field.get_db_prep_save(value, connection)
                    for field, value in zip(named_fields, (row[name] for name in named), strict=True)
                ]
                copy.write_row((key, *values, *defaults))
    return keys
