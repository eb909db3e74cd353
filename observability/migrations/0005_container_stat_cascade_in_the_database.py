"""A container's latest figures go with the container in the database itself (ON DELETE CASCADE).

Django cascades on its own: it reads the ContainerStat rows, deletes them, then the container.
A node's sampling pass that stored a container's figures between those two statements left a
row the container's DELETE could not pass (seen: a scale-down's apps.stop step failed with an
IntegrityError). With the cascade in the foreign key, whatever row is there when the container
goes, goes with it; a sampling pass that comes later finds the container gone and retries
without it (observability/services.py).

PostgreSQL only: SQLite has one writer at a time, so no pass can come in between.
"""

from django.db import migrations


def cascade(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    stat, container = apps.get_model("observability", "ContainerStat"), apps.get_model("applications", "Container")
    column = stat._meta.get_field("container").column
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f' AND conrelid = %s::regclass"
            " AND confrelid = %s::regclass",
            [stat._meta.db_table, container._meta.db_table],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(
                f"ALTER TABLE {quote(stat._meta.db_table)} DROP CONSTRAINT {quote(name)},"  # noqa: S608
                f" ADD CONSTRAINT {quote(name)} FOREIGN KEY ({quote(column)})"
                f" REFERENCES {quote(container._meta.db_table)} ({quote(container._meta.pk.column)})"
                " ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED"
            )


class Migration(migrations.Migration):
    dependencies = [
        ("applications", "0001_initial"),
        ("observability", "0004_usage_rollups"),
    ]

    operations = [migrations.RunPython(cascade, migrations.RunPython.noop)]
