"""The dashboard through Django's test client: every page for every role, anonymous users,
other tenants' objects, writes a role may not do, CSRF, and bad form input.

The scoping rules are the API's (tests/api_suite.py): another tenant's object is a 404, an
object one sees but may not change is a 403, and nothing is written when either happens.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hivemind.applications.models import App, AppRevision, Container
from hivemind.dashboard import views
from hivemind.nodes.models import Node
from hivemind.workflows.models import Workflow, WorkflowState
from observability.models import NodeUsageSample, UsageSample
from tenants import services as tenant_services
from tenants.models import Role
from tests.api_suite import ROLE_ORDER
from tests.dashboard.conftest import SPEC, deploy

GOOD_FORM = {
    "name": "good",
    "image": "nginx:1.27",
    "replicas": "1",
    "cpu": "100m",
    "memory": "64Mi",
    "restart": "always",
}


def read_pages(apps, node) -> dict[str, str]:
    app = apps["mine"]
    return {
        "overview": "/",
        "nodes": "/nodes/",
        "nodes' charts": "/nodes/?partial=charts",
        "node": f"/nodes/{node.name}/",
        "apps": "/apps/",
        "apps filtered": "/apps/?name=we&status=deploying&page=1",
        "app": f"/apps/{app.pk}/",
        "app logs": f"/apps/{app.pk}/logs/",
        "app logs partial": f"/apps/{app.pk}/logs/?partial=1",
        "workflows": "/workflows/",
        "workflows filtered": "/workflows/?state=running&kind=app.rollout",
        "workflow": f"/workflows/{app.workflow.pk}/",
        "workflow timeline": f"/workflows/{app.workflow.pk}/timeline/",
        "tenants": "/tenants/",
        "tenant": "/tenants/tenant-a/",
        "backups": "/backups/",
    }


def write_pages(apps) -> dict[str, str]:
    app = apps["mine"]
    return {
        "deploy": "/apps/new/",
        "scale": f"/apps/{app.pk}/scale/?replicas=3",
        "restart": f"/apps/{app.pk}/restart/",
        "rollback": f"/apps/{app.pk}/rollback/",
        "delete": f"/apps/{app.pk}/delete/",
    }


def text(response) -> str:
    return response.content.decode()


@pytest.mark.parametrize("role", ROLE_ORDER, ids=[r.value for r in ROLE_ORDER])
def test_every_read_page_answers_200_to_every_member(world, apps, ready_node, login, role):
    client = login(role.value)
    for name, url in read_pages(apps, ready_node).items():
        response = client.get(url)
        assert response.status_code == 200, (name, url, response.status_code)
        assert "Traceback" not in text(response)
    overview = text(client.get("/"))
    assert '<option value="tenant-a" selected>' in overview  # the switcher shows the current tenant
    assert f'<span class="badge">{role.value}</span>' in overview


def test_write_pages_answer_200_to_an_operator(world, apps, login):
    client = login("operator")
    for name, url in write_pages(apps).items():
        response = client.get(url)
        assert response.status_code == 200, (name, url, response.status_code)
        assert 'name="csrfmiddlewaretoken"' in text(response), name


def test_anonymous_users_are_sent_to_the_login_page(world, apps, ready_node):
    client = Client()
    for name, url in {**read_pages(apps, ready_node), **write_pages(apps)}.items():
        response = client.get(url)
        assert response.status_code == 302, (name, url)
        assert response["Location"].startswith("/login/?next="), (name, response["Location"])
    app = apps["mine"]
    for url in [f"/apps/{app.pk}/scale/", "/apps/new/", "/tenant/switch/", f"/nodes/{ready_node.name}/cordon/"]:
        assert client.post(url, {"replicas": 5}).status_code == 302, url
    app.refresh_from_db()
    assert app.replicas == 1
    login_page = client.get("/login/")
    assert login_page.status_code == 200
    assert '<label for="id_username">' in text(login_page)


def test_login_and_logout_through_the_forms(world):
    user = world.users["viewer"]
    user.set_password("a long passphrase")
    user.save()
    client = Client()
    bad = client.post("/login/", {"username": "viewer-a", "password": "wrong"})
    assert bad.status_code == 200
    assert 'role="alert"' in text(bad)
    good = client.post("/login/", {"username": "viewer-a", "password": "a long passphrase", "next": "/apps/"})
    assert (good.status_code, good["Location"]) == (302, "/apps/")
    assert client.get("/apps/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/apps/").status_code == 302


def test_another_tenants_objects_are_404_everywhere(world, apps, login):
    theirs = apps["theirs"]
    client = login("owner")  # the strongest role in tenant A, nothing in B
    urls = [
        f"/apps/{theirs.pk}/",
        f"/apps/{theirs.pk}/logs/",
        f"/apps/{theirs.pk}/logs/?partial=1",
        f"/apps/{theirs.pk}/scale/",
        f"/apps/{theirs.pk}/restart/",
        f"/apps/{theirs.pk}/rollback/",
        f"/apps/{theirs.pk}/delete/",
        f"/workflows/{theirs.workflow.pk}/",
        f"/workflows/{theirs.workflow.pk}/timeline/",
        "/tenants/tenant-b/",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 404, (url, response.status_code)
        assert "secret-app" not in text(response)
        assert "Traceback" not in text(response)
    posts = {
        f"/apps/{theirs.pk}/scale/": {"replicas": 3},
        f"/apps/{theirs.pk}/restart/": {},
        f"/apps/{theirs.pk}/delete/": {"confirm": "secret-app"},
        f"/workflows/{theirs.workflow.pk}/cancel/": {},
    }
    for url, data in posts.items():
        assert client.post(url, data).status_code == 404, url
    theirs.refresh_from_db()
    assert (theirs.replicas, theirs.status) == (1, App.Status.DEPLOYING)
    assert Workflow.objects.filter(tenant=world.b).count() == 1
    # Lists never show them either.
    for url in ["/apps/", "/workflows/", "/"]:
        assert "secret-app" not in text(client.get(url)), url
    assert client.post("/tenant/switch/", {"tenant": "tenant-b"}).status_code == 404


def test_a_viewers_writes_are_403_and_change_nothing(world, apps, ready_node, login):
    app = apps["mine"]
    client = login("viewer")
    before = (Workflow.objects.count(), App.objects.count())
    for url, data in {
        "/apps/new/": {**GOOD_FORM, "name": "nope"},
        f"/apps/{app.pk}/scale/": {"replicas": 3},
        f"/apps/{app.pk}/restart/": {},
        f"/apps/{app.pk}/rollback/": {"revision": 1},
        f"/apps/{app.pk}/delete/": {"confirm": "web"},
        f"/workflows/{app.workflow.pk}/cancel/": {},
        f"/nodes/{ready_node.name}/cordon/": {},
        f"/nodes/{ready_node.name}/drain/": {},
    }.items():
        response = client.post(url, data)
        assert response.status_code == 403, (url, response.status_code)
        assert "403" in text(response) and "Traceback" not in text(response)
    for url in write_pages(apps).values():
        assert client.get(url).status_code == 403, url
    app.refresh_from_db()
    ready_node.refresh_from_db()
    assert (app.replicas, app.status) == (1, App.Status.DEPLOYING)
    assert (Workflow.objects.count(), App.objects.count()) == before
    assert not ready_node.cordoned and not ready_node.draining
    page = text(client.get(f"/apps/{app.pk}/"))
    assert "Scale…" not in page and "Delete…" not in page  # buttons only for those who may


def test_an_operator_scales_through_the_confirmation(world, apps, login):
    app = apps["mine"]
    client = login("operator")
    confirm = client.get(f"/apps/{app.pk}/scale/?replicas=3")
    assert 'value="3"' in text(confirm)
    response = client.post(f"/apps/{app.pk}/scale/", {"replicas": "3"})
    assert response.status_code == 302
    workflow = Workflow.objects.get(pk=int(re.search(r"/workflows/(\d+)/", response["Location"]).group(1)))
    assert (workflow.kind, workflow.params["action"], workflow.params["replicas"]) == ("app.rollout", "scale", 3)
    app.refresh_from_db()
    assert app.replicas == 3
    bad = client.post(f"/apps/{app.pk}/scale/", {"replicas": "many"})
    assert bad.status_code == 400
    assert "expected a whole number from 0 to 1000, got &#x27;many&#x27;" in text(bad)
    too_many = client.post(f"/apps/{app.pk}/scale/", {"replicas": "5000"})
    assert too_many.status_code == 400
    assert 'id="id_replicas_error"' in text(too_many)
    quota = client.post(f"/apps/{app.pk}/scale/", {"replicas": "900"})  # 50 containers by default
    assert quota.status_code == 409
    assert "quota exceeded for cpu in tenant tenant-a" in text(quota)
    app.refresh_from_db()
    assert app.replicas == 3


def test_delete_needs_the_name_typed(world, apps, login):
    app = apps["mine"]
    client = login("operator")
    wrong = client.post(f"/apps/{app.pk}/delete/", {"confirm": "wbe"})
    assert wrong.status_code == 400
    assert "type web to delete it" in text(wrong)
    app.refresh_from_db()
    assert app.status == App.Status.DEPLOYING
    right = client.post(f"/apps/{app.pk}/delete/", {"confirm": "web"})
    assert right.status_code == 302
    app.refresh_from_db()
    assert app.status == App.Status.DELETING
    assert Workflow.objects.filter(kind="app.delete", tenant=world.a).count() == 1
    assert "Delete…" not in text(client.get(f"/apps/{app.pk}/"))


def test_rollback_and_restart_start_their_workflows(world, apps, login):
    app = apps["mine"]
    staff = world.users["staff"]
    from hivemind.applications import services

    services.app_update(app=app, spec={**SPEC, "env": {"MODE": "two"}}, actor=staff)
    # As its rollout would on finishing: revision 2 is current, so 1 is the one to go back to.
    App.objects.filter(pk=app.pk).update(revision=AppRevision.objects.get(app=app, number=2))
    client = login("operator")
    assert 'value="1"' in text(client.get(f"/apps/{app.pk}/rollback/"))
    assert client.post(f"/apps/{app.pk}/rollback/", {"revision": "1"}).status_code == 302
    assert client.post(f"/apps/{app.pk}/restart/", {}).status_code == 302
    actions = list(Workflow.objects.filter(subject=f"app:{app.pk}").order_by("id").values_list("params", flat=True))
    assert [(p["action"], p.get("restart")) for p in actions][-2:] == [("rollback", False), ("restart", True)]
    assert actions[-2]["revision"] == AppRevision.objects.get(app=app, number=1).pk


def test_csrf_is_enforced_on_every_form(world, apps, login):
    app = apps["mine"]
    client = login("operator", enforce_csrf_checks=True)
    deploy_form = {**GOOD_FORM, "name": "csrf"}
    for url, data in {
        "/apps/new/": deploy_form,
        f"/apps/{app.pk}/scale/": {"replicas": "2"},
        "/tenant/switch/": {"tenant": "tenant-a"},
        "/logout/": {},
    }.items():
        response = client.post(url, data)
        assert response.status_code == 403, url
        assert "Form expired" in text(response)
    app.refresh_from_db()
    assert app.replicas == 1
    assert not App.objects.filter(name="csrf").exists()
    client.get("/apps/new/")  # sets the CSRF cookie, as a browser would
    token = client.cookies["csrftoken"].value
    response = client.post("/apps/new/", {**deploy_form, "csrfmiddlewaretoken": token})
    assert response.status_code == 302, text(response)
    assert App.objects.filter(name="csrf", tenant=world.a).exists()


BAD_INPUT = [
    ({"image": "Not An Image!"}, "image", "is not an image reference"),
    ({"image": ""}, "image", "This field is required"),
    ({"name": "Bad_Name"}, "name", "expected a DNS label"),
    ({"replicas": "two"}, "replicas", "expected a whole number from 0 to 1000"),
    ({"cpu": "lots"}, "cpu", "expected a CPU amount"),
    ({"memory": "12 parsecs"}, "memory", "expected a size such as 512Mi"),
    ({"memory_limit": "8Mi", "memory": "16Mi"}, "memory_limit", "the limit is below the request"),
    ({"ports": "80 70000"}, "ports", "ports[1].container_port: expected 1 to 65535, got 70000"),
    ({"env": "GOOD=1\n1BAD=2"}, "env", "env.1BAD: a variable name is letters"),
    ({"env": "NOEQUALS"}, "env", "expected KEY=value"),
    ({"health_type": "tcp", "health_port": ""}, "health_port", "required for a tcp health check"),
    ({"health_type": "http", "health_port": "80", "health_path": "no-slash"}, "health_path", "starting with /"),
    ({"health_type": "cmd", "health_command": ""}, "health_command", "required for a cmd health check"),
    ({"health_type": "tcp", "health_port": "80", "health_interval": "0.1"}, "health_interval", "0.5 to 3600"),
    ({"node_selector": "zone"}, "node_selector", "expected key=value pairs"),
]


@pytest.mark.parametrize(("change", "field", "message"), BAD_INPUT, ids=[b[1] + ":" + b[2][:20] for b in BAD_INPUT])
def test_bad_deploy_input_shows_the_error_next_to_the_field_and_creates_nothing(world, login, change, field, message):
    client = login("operator")
    form = {**GOOD_FORM, **change}
    before = (App.objects.count(), Workflow.objects.count(), AppRevision.objects.count())
    response = client.post("/apps/new/", form)
    assert response.status_code == 400
    page = text(response).replace("&#x27;", "'")
    error = re.search(rf'<div class="field-error" id="id_{field}_error" role="alert"><p>(.*?)</p>', page)
    assert error, f"no error next to {field}: {page[page.find('field-error') - 200 :][:600]}"
    assert message in error.group(1)
    assert (
        f'aria-describedby="id_{field}_helptext id_{field}_error"' in page
        or f'aria-describedby="id_{field}_error"' in page
    )
    assert (App.objects.count(), Workflow.objects.count(), AppRevision.objects.count()) == before
    # What was typed is kept, so it can be corrected rather than typed again.
    if change.get(field):
        assert str(change[field]).split("\n")[0].replace("'", "&#x27;") in text(response)


def test_a_taken_name_is_a_conflict_on_the_name_field(world, apps, login):
    response = login("operator").post("/apps/new/", {**GOOD_FORM, "name": "web"})
    assert response.status_code == 409
    assert re.search(r'id="id_name_error" role="alert"><p>an app named web exists in tenant tenant-a', text(response))


def test_a_good_deploy_redirects_to_its_workflow(world, login):
    client = login("operator")
    response = client.post(
        "/apps/new/",
        {
            **GOOD_FORM,
            "name": "api",
            "replicas": "2",
            "cpu": "250m",
            "memory": "32Mi",
            "restart": "on-failure",
            "ports": "8080 80:8081/tcp",
            "env": "MODE=prod\nLEVEL=3",
            "health_type": "http",
            "health_port": "8080",
            "health_path": "/healthz",
            "health_interval": "2",
            "node_selector": "zone=eu-1",
        },
    )
    assert response.status_code == 302
    app = App.objects.get(name="api", tenant=world.a)
    assert response["Location"] == f"/workflows/{Workflow.objects.get(subject=f'app:{app.pk}').pk}/"
    spec = app.revision.spec
    assert (app.replicas, spec["resources"]["cpu"], spec["restart"]) == (2, 250, "on-failure")
    assert spec["env"] == {"MODE": "prod", "LEVEL": "3"}
    assert [(p["container_port"], p["host_port"]) for p in spec["ports"]] == [(8080, None), (8081, 80)]
    assert (spec["health"]["type"], spec["health"]["path"], spec["health"]["interval"]) == ("http", "/healthz", 2.0)
    assert spec["placement"]["node_selector"] == {"zone": "eu-1"}
    assert app.created_by == world.users["operator"]


def test_switching_tenant_shows_only_that_tenants_objects(world, apps, login):
    both = world.users["viewer"]
    tenant_services.membership_add(tenant=world.b, user=both, role=Role.VIEWER, actor=world.users["staff"])
    client = login("viewer")
    assert "web" in text(client.get("/apps/")) and "secret-app" not in text(client.get("/apps/"))
    response = client.post("/tenant/switch/", {"tenant": "tenant-b", "next": f"/apps/{apps['mine'].pk}/"})
    assert (response.status_code, response["Location"]) == (302, "/apps/")  # the section, not A's object
    listing = text(client.get("/apps/"))
    assert "secret-app" in listing and ">web<" not in listing
    assert client.get(f"/apps/{apps['mine'].pk}/").status_code == 404  # A's app is not in tenant B
    assert client.get(f"/apps/{apps['theirs'].pk}/").status_code == 200
    assert client.post("/tenant/switch/", {"tenant": "no-such"}).status_code == 404
    assert client.post("/tenant/switch/", {"tenant": "tenant-a", "next": "https://evil.example/"})["Location"] == "/"


def test_staff_may_pick_any_tenant(world, apps, login):
    client = login("staff")
    overview = text(client.get("/"))
    assert '<option value="tenant-a"' in overview and '<option value="tenant-b"' in overview
    client.post("/tenant/switch/", {"tenant": "tenant-b"})
    assert client.get(f"/apps/{apps['theirs'].pk}/").status_code == 200


def test_only_staff_cordon_uncordon_and_drain(world, ready_node, login):
    member = login("owner")
    assert "Cordon</button>" not in text(member.get(f"/nodes/{ready_node.name}/"))
    staff = login("staff")
    assert "Cordon</button>" in text(staff.get(f"/nodes/{ready_node.name}/"))
    assert staff.post(f"/nodes/{ready_node.name}/cordon/").status_code == 302
    ready_node.refresh_from_db()
    assert ready_node.cordoned and not ready_node.draining
    staff.post(f"/nodes/{ready_node.name}/drain/")
    ready_node.refresh_from_db()
    assert ready_node.draining
    staff.post(f"/nodes/{ready_node.name}/uncordon/")
    ready_node.refresh_from_db()
    assert not ready_node.cordoned and not ready_node.draining
    assert staff.post(f"/nodes/{ready_node.name}/explode/").status_code == 404
    assert staff.get(f"/nodes/{ready_node.name}/cordon/").status_code == 405


def test_nodes_page_shows_capacity_allocation_labels_and_taints(world, apps, ready_node, login):
    app = apps["mine"]
    Container.objects.create(
        tenant=world.a, app=app, revision=app.revision, replica=0, node=ready_node, name="web-0",
        state=Container.State.RUNNING, cpu_millis=100, memory_bytes=16 * 2**20,
    )  # fmt: skip
    page = text(login("viewer").get("/nodes/"))
    assert "100m / 4 cores" in page and "16 MiB / 8 GiB" in page
    assert "zone=eu-1" in page and "gpu=true:NoSchedule" in page


def test_charts_draw_samples_or_say_there_are_none(world, apps, ready_node, login):
    app = apps["mine"]
    client = login("viewer")
    assert text(client.get(f"/apps/{app.pk}/")).count("no samples yet") == 2
    assert "no finished workflows yet" in text(client.get("/workflows/"))
    now = timezone.now()
    UsageSample.objects.bulk_create(
        UsageSample(at=now - timedelta(minutes=m), node=ready_node, tenant=world.a, app=app, container_name="web-0",
                    cpu_millis=50 + m, memory_bytes=(10 + m) * 2**20)
        for m in range(0, 30, 2)
    )  # fmt: skip
    NodeUsageSample.objects.bulk_create(  # the node's total of each pass, as the agent stores it
        NodeUsageSample(at=now - timedelta(minutes=m), node=ready_node, cpu_millis=50 + m,
                        memory_bytes=(10 + m) * 2**20, containers=1)
        for m in range(0, 30, 2)
    )  # fmt: skip
    for url in (f"/apps/{app.pk}/", "/nodes/?partial=charts", f"/nodes/{ready_node.name}/"):
        page = text(client.get(url))
        assert "no samples yet" not in page, url
        lines = re.findall(r'<polyline class="series"[^>]* points="([^"]+)"', page)
        assert len(lines) == 2, url  # CPU and memory
        assert all(len(line.split()) == 15 for line in lines), url
    Workflow.objects.filter(pk=app.workflow.pk).update(
        state=WorkflowState.SUCCEEDED, started_at=now - timedelta(seconds=12), finished_at=now
    )
    page = text(client.get("/workflows/"))
    assert "app.rollout (1)" in page and "app.rollout: 12 s" in page


def test_logs_say_why_a_node_gave_none(world, apps, ready_node, login):
    app = apps["mine"]
    Node.objects.filter(pk=ready_node.pk).update(status=Node.Status.NOT_READY)
    Container.objects.create(
        tenant=world.a, app=app, revision=app.revision, replica=0, node=ready_node, name="web-0",
        state=Container.State.RUNNING,
    )  # fmt: skip
    response = login("viewer").get(f"/apps/{app.pk}/logs/?partial=1")
    assert response.status_code == 200
    assert f"node {ready_node.name} is not ready; its agent was not asked" in text(response)


@pytest.mark.django_db(transaction=True)
def test_logs_of_a_node_whose_agent_is_silent_name_it_instead_of_failing(world, apps, ready_node, login):
    """A ready node with no agent consuming its queue: the page waits for it (10 s) and says so."""
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    app = apps["mine"]
    Container.objects.create(
        tenant=world.a, app=app, revision=app.revision, replica=0, node=ready_node, name="web-0",
        state=Container.State.RUNNING,
    )  # fmt: skip
    response = login("viewer").get(f"/apps/{app.pk}/logs/")
    assert response.status_code == 200
    assert f"node {ready_node.name} did not answer within 10 s" in text(response)


def test_error_pages_are_friendly(world, login):
    client = login("viewer")
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404
    assert "404 · Not found" in text(missing) and "switch tenant" in text(missing)
    assert 'id="tenant-switch"' in text(missing)  # in the layout, with the switcher
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    for response, code in [
        (views.server_error(request), 500),
        (views.bad_request(request), 400),
        (views.forbidden(request, PermissionError("you may not")), 403),
    ]:
        assert response.status_code == code
        assert f"{code} · " in response.content.decode()


def test_pages_cost_the_same_number_of_queries_for_5_or_60_apps(world, login):
    """No N+1: a list page's queries do not grow with its rows (NetBox's query-count baseline)."""
    staff = world.users["staff"]
    client = login("viewer")
    counts = {}
    tenant_services.quota_set(tenant=world.a, limits={"apps": 1000}, actor=staff)
    for total in (5, 60):
        while App.objects.filter(tenant=world.a).count() < total:
            n = App.objects.filter(tenant=world.a).count()
            app = deploy(world.a, f"app-{n}", staff, replicas=0)
            Container.objects.create(
                tenant=world.a, app=app, revision=app.revision, replica=0, name=f"app-{n}-0",
                state=Container.State.RUNNING,
            )  # fmt: skip
        for url in ["/", "/apps/", "/workflows/", "/nodes/", "/tenants/", "/tenants/tenant-a/"]:
            client.get(url)  # the first request of a session also stores the current tenant in it
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200
            counts.setdefault(url, []).append(len(queries))
    for url, (few, many) in counts.items():
        assert few == many, (url, few, many)
