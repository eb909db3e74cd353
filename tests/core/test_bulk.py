"""insert_rows: many rows through COPY on PostgreSQL, as bulk_create would have made them."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from hivemind.applications.models import App, AppRevision, Container
from hivemind.core.bulk import insert_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(world):
    app = App.objects.create(tenant=world.a, name="bulk")
    revision = AppRevision.objects.create(app=app, number=1, spec={"image": "busybox"})
    return app, revision


def _rows(app, revision, names):
    return [
        {"tenant_id": app.tenant_id, "app_id": app.pk, "revision_id": revision.pk, "replica": i, "name": name,
         "cpu_millis": 100 + i, "memory_bytes": 2**20 * (i + 1)}
        for i, name in enumerate(names)
    ]  # fmt: skip


def test_rows_get_their_keys_in_order_and_the_model_defaults(app):
    app, revision = app
    before = timezone.now()
    keys = insert_rows(Container, _rows(app, revision, ["c0", "c1", "c2"]))
    assert len(set(keys)) == 3
    made = {c.pk: c for c in Container.objects.filter(pk__in=keys)}
    assert [made[k].name for k in keys] == ["c0", "c1", "c2"]  # key i is row i's
    assert [made[k].cpu_millis for k in keys] == [100, 101, 102]
    for container in made.values():  # what the rows did not name: the model's defaults
        assert (container.state, container.health, container.restarts) == ("pending", "none", 0)
        assert (container.node_id, container.exit_code, container.message, container.docker_id) == (None, None, "", "")
        assert before <= container.created_at <= timezone.now()  # auto_now_add
    # The next row made the ordinary way takes a key after them: the sequence moved on.
    later = Container.objects.create(tenant_id=app.tenant_id, app=app, revision=revision, replica=9, name="c9")
    assert later.pk > max(keys)
    assert insert_rows(Container, []) == []


def test_a_constraint_the_rows_break_keeps_none_of_them(app):
    app, revision = app
    Container.objects.create(tenant_id=app.tenant_id, app=app, revision=revision, replica=0, name="taken")
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_rows(Container, _rows(app, revision, ["free", "taken"]))
    assert list(Container.objects.values_list("name", flat=True)) == ["taken"]


def test_a_field_the_model_lacks_is_named(app):
    app, revision = app
    rows = _rows(app, revision, ["x"])
    rows[0]["colour"] = "red"
    with pytest.raises(ValueError, match=r"applications\.Container has no field colour"):
        insert_rows(Container, rows)
