"""The apps API: tenant scoping (shared suite), spec validation with the field named, quota."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hivemind.applications import services
from hivemind.applications.models import App, Container
from hivemind.nodes.models import Node
from tenants.models import Role, TenantUsage
from tests.api_suite import TenantOwnedAPITests

pytestmark = pytest.mark.django_db

SPEC = {"image": "hivemind/busybox:latest", "command": "sleep 3600", "resources": {"cpu": "100m", "memory": "32Mi"}}


def deploy(world, tenant, name="web", replicas=1, **spec) -> App:
    # In a `db` test nothing commits, so no workflow message is sent.
    return services.app_deploy(
        tenant=tenant, name=name, spec={**SPEC, **spec}, replicas=replicas, actor=world.users["staff"]
    )


class TestAppAPI(TenantOwnedAPITests):
    basename = "app"
    supports = {"create", "update", "delete"}
    custom_actions = [
        ("scale", "post"),
        ("restart", "post"),
        ("rollback", "post"),
        ("revisions", "get"),
        ("logs", "get"),
        ("stats", "get"),
    ]

    def make(self, world, tenant):
        return deploy(world, tenant, name=f"app-{App.objects.count()}")

    def create_payload(self, world, tenant):
        return {"tenant": tenant.slug, "name": f"new-{App.objects.count()}", "spec": SPEC, "replicas": 1}

    def update_payload(self, world):
        return {"spec": {**SPEC, "env": {"MODE": "patched"}}}

    def model_exists(self, obj) -> bool:
        obj.refresh_from_db()
        return obj.status != App.Status.DELETING


class TestContainerAPI(TenantOwnedAPITests):
    basename = "container"
    supports: set[str] = set()

    def make(self, world, tenant):
        app = deploy(world, tenant, name=f"c-{App.objects.count()}")
        return Container.objects.create(
            tenant=tenant, app=app, revision=app.revision, replica=0, name=f"hm-test-{app.pk}"
        )


def test_deploy_answers_202_with_the_workflow_and_holds_quota(world):
    client = world.client(Role.OPERATOR.value)
    response = client.post(
        "/api/v1/apps/", {"tenant": world.a.slug, "name": "api", "spec": SPEC, "replicas": 3}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "deploying" and body["revision"] == 1 and body["workflow"]
    usage = TenantUsage.objects.get(tenant=world.a)
    assert (usage.apps, usage.containers, usage.cpu_millis, usage.memory_bytes) == (1, 3, 300, 3 * 32 * 2**20)
    again = client.post("/api/v1/apps/", {"tenant": world.a.slug, "name": "api", "spec": SPEC}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "app_exists"


DEPLOY_QUERIES = 28  # what bench/api.py's POST costs (34 before); here savepoints stand for BEGIN and COMMIT


def test_a_deploy_costs_a_bounded_number_of_queries_and_journals_what_is_stored(world):
    from backups.models import JournalEntry

    client = world.client(Role.OPERATOR.value)
    payload = {"tenant": world.a.slug, "spec": SPEC, "replicas": 2}
    assert client.post("/api/v1/apps/", {**payload, "name": "first"}, format="json").status_code == 202
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/api/v1/apps/", {**payload, "name": "second"}, format="json")
    assert response.status_code == 202, response.content
    assert len(captured) <= DEPLOY_QUERIES, "\n".join(q["sql"][:150] for q in captured.captured_queries)
    app = App.objects.select_related("revision", "reservation").get(tenant=world.a, name="second")
    assert app.reservation.amounts == {"apps": 1, "containers": 2, "cpu": 200, "memory": 2 * 32 * 2**20}
    entry = JournalEntry.objects.get(tenant=world.a, kind="app", name="second")
    assert entry.before is None
    assert entry.after == {"name": "second", "service_name": "second", "replicas": 2, "spec": app.revision.spec}


def test_deploy_over_quota_is_refused_and_holds_nothing(world):
    from tenants.services import quota_set

    quota_set(tenant=world.a, limits={"containers": 2}, actor=world.users["staff"])
    response = world.client("operator").post(
        "/api/v1/apps/", {"tenant": world.a.slug, "name": "big", "spec": SPEC, "replicas": 3}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "quota_exceeded"
    assert not App.objects.filter(name="big").exists()
    assert TenantUsage.objects.get(tenant=world.a).containers == 0


@pytest.mark.parametrize(
    ("spec", "replicas", "field", "message"),
    [
        ({"image": "Not An Image!"}, 1, "image", "is not an image reference"),
        ({"image": ""}, 1, "image", "required"),
        ({"ports": [{"container_port": 70000}]}, 1, "ports[0].container_port", "expected 1 to 65535"),
        ({"ports": ["80:8080", "80:9090"]}, 1, "ports[1].host_port", "host port 80/tcp is published twice"),
        ({"ports": ["8080", "8080/tcp"]}, 1, "ports[1]", "container port 8080/tcp is listed twice"),
        ({"resources": {"cpu": "lots"}}, 1, "resources.cpu", "expected a CPU amount"),
        ({"resources": {"memory": "12 parsecs"}}, 1, "resources.memory", "expected a size"),
        ({"resources": {"cpu": "500m", "cpu_limit": "250m"}}, 1, "resources.cpu_limit", "below the request"),
        ({}, -1, "replicas", "greater than or equal to 0"),
        ({"env": {"1BAD": "x"}}, 1, "env.1BAD", "a variable name"),
        ({"health": {"type": "http", "path": "/"}}, 1, "health.port", "required for an http health check"),
        ({"restart": "sometimes"}, 1, "restart", "expected one of"),
        ({"placement": {"node_selector": {"hivemind.io/node": "nowhere"}}}, 1, "placement.node_selector", "no node"),
        ({"placement": {"node_selector": {"Zone": "eu"}}}, 1, "placement.node_selector", "label key 'Zone' must be"),
        ({"placement": {"node_selector": {"zone": "eu west"}}}, 1, "placement.node_selector", "value 'eu west'"),
        (
            {"placement": {"affinity": {"required": [{"app": "db"}]}, "anti_affinity": {"required": [{"app": "db"}]}}},
            1,
            "placement.anti_affinity",
            "both required and forbidden",
        ),
        ({"update": {"max_surge": 0, "max_unavailable": 0}}, 1, "update", "cannot both be 0"),
        ({"colour": "blue"}, 1, "spec", "unknown field(s): colour"),
    ],
)
def test_bad_spec_is_a_400_naming_the_field(world, spec, replicas, field, message):
    Node.objects.create(name="edge-1")
    response = world.client("operator").post(
        "/api/v1/apps/",
        {"tenant": world.a.slug, "name": "bad", "spec": {**SPEC, **spec}, "replicas": replicas},
        format="json",
    )
    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors, errors
    assert message in str(errors[field])
    assert not App.objects.filter(name="bad").exists()
    assert TenantUsage.objects.get(tenant=world.a).apps == 0


def test_scale_update_rollback_make_workflows_and_revisions(world):
    app = deploy(world, world.a, replicas=2)
    client = world.client("operator")
    scaled = client.post(f"/api/v1/apps/{app.pk}/scale/", {"replicas": 4}, format="json")
    assert scaled.status_code == 202 and scaled.json()["url"].startswith("/api/v1/workflows/")
    assert TenantUsage.objects.get(tenant=world.a).containers == 4
    updated = client.patch(f"/api/v1/apps/{app.pk}/", {"spec": {**SPEC, "image": "hivemind/busybox:2"}}, format="json")
    assert updated.status_code == 202, updated.content
    revisions = client.get(f"/api/v1/apps/{app.pk}/revisions/").json()
    assert [r["number"] for r in revisions] == [2, 1]
    assert revisions[0]["spec"]["image"] == "hivemind/busybox:2"
    current = client.get(f"/api/v1/apps/{app.pk}/").json()["current_spec"]
    assert current["resources"]["cpu"] == "100m"  # sent back as it is, it means the same
    resent = client.patch(f"/api/v1/apps/{app.pk}/", {"spec": current}, format="json")
    assert resent.status_code == 202, resent.content
    assert app.revisions.get(number=3).spec["resources"] == app.revisions.get(number=1).spec["resources"]
    rolled = client.post(f"/api/v1/apps/{app.pk}/rollback/", {"revision": 1}, format="json")
    assert rolled.status_code == 202
    missing = client.post(f"/api/v1/apps/{app.pk}/rollback/", {"revision": 9}, format="json")
    assert missing.status_code == 409 and missing.json()["code"] == "no_such_revision"
    assert client.post(f"/api/v1/apps/{app.pk}/scale/", {"replicas": -1}, format="json").status_code == 400


def _replica(app, number, state):
    return Container.objects.create(
        tenant=app.tenant, app=app, revision=app.revision, replica=number, name=f"hm-{app.pk}-{number}", state=state
    )


def test_list_counts_running_replicas_in_the_same_queries_for_one_app_or_many(world):
    web = deploy(world, world.a, name="web", replicas=3)
    _replica(web, 0, Container.State.RUNNING)
    _replica(web, 1, Container.State.RUNNING)
    _replica(web, 2, Container.State.EXITED)
    clients = {who: world.client(who) for who in ("viewer", "staff")}
    one = {}
    for who, client in clients.items():
        client.get("/api/v1/apps/")  # the token's first use writes last_used_at
        with CaptureQueriesContext(connection) as one[who]:
            assert [(a["name"], a["running"]) for a in client.get("/api/v1/apps/").json()["results"]] == [("web", 2)]
    for number in range(5):
        _replica(deploy(world, world.a, name=f"more-{number}"), 0, Container.State.RUNNING)
    deploy(world, world.b, name="elsewhere")  # another tenant's: staff sees it, the viewer does not
    for who, client in clients.items():
        with CaptureQueriesContext(connection) as many:
            rows = {a["name"]: a["running"] for a in client.get("/api/v1/apps/").json()["results"]}
        assert rows == {"web": 2, **{f"more-{n}": 1 for n in range(5)}, **({"elsewhere": 0} if who == "staff" else {})}
        assert len(many) == len(one[who]), [q["sql"] for q in many.captured_queries]


def test_an_app_granted_to_a_group_is_the_only_one_its_members_see(world):
    from django.contrib.auth.models import Group
    from guardian.shortcuts import assign_perm

    shown, hidden = deploy(world, world.b, name="shown"), deploy(world, world.b, name="hidden")
    group = Group.objects.create(name="auditors")
    group.user_set.add(world.users["granted"])
    assign_perm("applications.view_app", group, shown)
    client = world.client("granted")
    assert [a["name"] for a in client.get("/api/v1/apps/").json()["results"]] == ["shown"]
    assert client.get(f"/api/v1/apps/{shown.pk}/").status_code == 200
    assert client.get(f"/api/v1/apps/{hidden.pk}/").status_code == 404
    # Seeing is not changing: the group holds view only.
    assert client.post(f"/api/v1/apps/{shown.pk}/restart/").status_code == 403
