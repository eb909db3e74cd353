"""node_usage and app_usage: buckets, per-container means summed, one query whatever the ids,
on PostgreSQL (the suite's database) and on SQLite (the embedded default, in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hivemind.applications.models import App
from hivemind.nodes.models import Node
from observability.models import NodeUsageSample, UsageSample
from observability.selectors import app_usage, node_usage
from tests.conftest import REPO
from tests.observability import scenario


@pytest.mark.django_db
def test_buckets_average_each_container_then_sum_them_on_postgresql(world):
    assert connection.vendor == "postgresql"
    scenario.check(scenario.build(world.a))


def test_the_same_on_sqlite(tmp_path, subprocess_env):
    subprocess_env.update(
        HIVEMIND_DATABASE_URL=f"sqlite:///{tmp_path / 'hivemind.sqlite3'}",
        HIVEMIND_VAR_DIR=str(tmp_path),
        HIVEMIND_SECRET_KEY=settings.SECRET_KEY,
    )
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=subprocess_env, check=True, timeout=120)
    code = (
        "from django.db import connection; assert connection.vendor == 'sqlite', connection.vendor\n"
        "from tenants.models import Tenant\n"
        "from tests.observability import scenario\n"
        "scenario.check(scenario.build(Tenant.objects.get(slug='default')))\n"
        "print('sqlite: usage buckets as expected')\n"
    )
    done = subprocess.run(
        [*manage, "shell", "-c", code], cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sqlite: usage buckets as expected" in done.stdout


@pytest.mark.django_db
def test_one_query_whatever_the_number_of_ids(world):
    nodes = Node.objects.bulk_create([Node(name=f"many-{i}") for i in range(40)])
    apps = App.objects.bulk_create([App(tenant=world.a, name=f"many-{i}") for i in range(40)])
    at = timezone.now() - timedelta(minutes=5)
    UsageSample.objects.bulk_create(
        UsageSample(at=at, node=n, tenant=world.a, app=a, container_name=f"c-{i}", cpu_millis=i, memory_bytes=i * 1000)
        for i, (n, a) in enumerate(zip(nodes, apps, strict=True))
    )
    NodeUsageSample.objects.bulk_create(
        NodeUsageSample(at=at, node=n, cpu_millis=i, memory_bytes=i * 1000, containers=1) for i, n in enumerate(nodes)
    )
    for read, owners in ((node_usage, nodes), (app_usage, apps)):
        with CaptureQueriesContext(connection) as one:
            read([owners[0].pk])
        with CaptureQueriesContext(connection) as forty:
            points = read([o.pk for o in owners])
        assert len(one) == len(forty) == 1, [q["sql"] for q in forty.captured_queries]
        assert [points[o.pk][0].cpu_millis for o in owners] == list(range(40))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"minutes": 0}, "minutes"), ({"minutes": -5}, "minutes"), ({"bucket": 0}, "bucket"), ({"bucket": 1.5}, "bucket")],
)
def test_a_bad_window_or_bucket_is_refused_naming_it(kwargs, named):
    with pytest.raises(ValueError, match=f"^{named}: expected a positive whole number"):
        node_usage([1], **kwargs)


@pytest.mark.django_db
def test_samples_go_with_their_app_and_outlive_their_node(world):
    node = Node.objects.create(name="gone-node")
    app = App.objects.create(tenant=world.a, name="gone-app")
    keep = App.objects.create(tenant=world.a, name="kept-app")
    at = timezone.now()
    for owner in (app, keep):
        UsageSample.objects.create(
            at=at, node=node, tenant=world.a, app=owner, container_name=owner.name, cpu_millis=1, memory_bytes=1
        )
    app.delete()
    node.delete()
    assert list(UsageSample.objects.values_list("container_name", "node")) == [("kept-app", None)]
