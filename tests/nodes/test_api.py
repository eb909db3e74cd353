"""The nodes API: who may read and change nodes, validation, filters, capacity and removal."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hivemind.applications.models import Container
from hivemind.nodes.models import Node
from tenants.models import AuditEvent
from tests.nodes.conftest import make_app, make_container, make_node

ACTIONS = ["label", "taint", "cordon", "uncordon", "drain"]
VALID_BODIES = {
    "label": {"set": {"zone": "eu-1"}},
    "taint": {"add": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]},
    "cordon": {},
    "uncordon": {},
    "drain": {},
}


def list_url() -> str:
    return reverse("api:node-list")


def detail_url(name: str) -> str:
    return reverse("api:node-detail", args=[name])


def action_url(name: str, action: str) -> str:
    return reverse(f"api:node-{action}", args=[name])


@pytest.fixture
def edge(db) -> Node:
    return make_node("edge-1", labels={"zone": "eu-1"})


# --- permissions -------------------------------------------------------------------------------


def test_anonymous_gets_401_everywhere(world, edge):
    client = world.client(None)
    assert client.get(list_url()).status_code == 401
    assert client.get(detail_url(edge.name)).status_code == 401
    for action in ACTIONS:
        assert client.post(action_url(edge.name, action), VALID_BODIES[action], format="json").status_code == 401
    assert client.delete(detail_url(edge.name)).status_code == 401
    assert Node.objects.filter(name=edge.name).exists()


@pytest.mark.parametrize("who", ["viewer", "owner", "outsider", "granted"])
def test_any_signed_in_user_reads_nodes_but_not_the_docker_endpoint(world, edge, who):
    client = world.client(who)
    listed = client.get(list_url())
    assert listed.status_code == 200
    assert [n["name"] for n in listed.json()["results"]] == ["edge-1"]
    detail = client.get(detail_url(edge.name))
    assert detail.status_code == 200
    assert detail.json()["labels"] == {"zone": "eu-1"}
    assert detail.json()["docker_host"] is None


@pytest.mark.parametrize("who", ["viewer", "owner", "outsider"])
def test_only_platform_staff_change_nodes(world, edge, who):
    client = world.client(who)
    for action in ACTIONS:
        response = client.post(action_url(edge.name, action), VALID_BODIES[action], format="json")
        assert response.status_code == 403, (action, response.content)
        assert response.json()["detail"] == "only platform staff may change nodes"
    assert client.delete(detail_url(edge.name)).status_code == 403
    edge.refresh_from_db()
    assert (edge.labels, edge.taints, edge.cordoned, edge.draining) == ({"zone": "eu-1"}, [], False, False)


def test_staff_see_the_docker_endpoint(world, edge):
    assert world.client("staff").get(detail_url(edge.name)).json()["docker_host"] == "tcp://10.0.0.1:2375"


def test_unknown_node_is_404_naming_it(world):
    client = world.client("staff")
    response = client.get(detail_url("nope"))
    assert response.status_code == 404
    assert response.json()["detail"] == "node 'nope' not found"
    for action in ACTIONS:
        assert client.post(action_url("nope", action), VALID_BODIES[action], format="json").status_code == 404
    assert client.delete(detail_url("nope")).status_code == 404
    # Names that are no DNS label still get the API's 404, not a page.
    assert client.get(detail_url("Not_A_Node")).json()["detail"] == "node 'Not_A_Node' not found"


# --- what a node shows -------------------------------------------------------------------------


def test_capacity_allocated_free_and_containers(world, edge):
    other = make_node("edge-2")
    app, _ = make_app(world.a)
    make_container(world.a, edge, app=app, cpu_millis=500, memory_bytes=2**30, state=Container.State.RUNNING)
    make_container(world.b, edge, cpu_millis=250, memory_bytes=2**29, state=Container.State.PENDING)
    make_container(world.a, edge, app=app, cpu_millis=1000, memory_bytes=2**31, state=Container.State.REMOVED)
    make_container(world.a, other, app=app, cpu_millis=100, memory_bytes=2**20, state=Container.State.RUNNING)

    body = world.client("viewer").get(detail_url(edge.name)).json()
    assert body["capacity"] == {"cpu_millis": 4000, "memory_bytes": 8 * 2**30, "disk_bytes": 100 * 2**30}
    assert body["allocated"] == {"cpu_millis": 750, "memory_bytes": 2**30 + 2**29}
    assert body["free"] == {"cpu_millis": 3250, "memory_bytes": 8 * 2**30 - 2**30 - 2**29, "disk_bytes": 100 * 2**30}
    assert body["containers"] == 2
    assert body["state"] == "ready"
    assert body["schedulable"] is True

    rows = {n["name"]: n for n in world.client("viewer").get(list_url()).json()["results"]}
    assert rows["edge-2"]["containers"] == 1
    assert rows["edge-2"]["allocated"] == {"cpu_millis": 100, "memory_bytes": 2**20}


def test_list_costs_the_same_queries_for_one_node_or_many(world, edge):
    client = world.client("viewer")
    client.get(list_url())  # the token's first use writes last_used_at
    with CaptureQueriesContext(connection) as one:
        assert client.get(list_url()).status_code == 200
    for number in range(2, 8):
        node = make_node(f"edge-{number}")
        make_container(world.a, node, cpu_millis=10)
    with CaptureQueriesContext(connection) as many:
        assert len(client.get(list_url()).json()["results"]) == 7
    assert len(many) == len(one), [q["sql"] for q in many.captured_queries]


# --- filters -----------------------------------------------------------------------------------


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [n["name"] for n in response.json()["results"]]


def test_filter_by_state(world):
    make_node("a-ready")
    make_node("b-down", status=Node.Status.NOT_READY)
    make_node("c-cordoned", cordoned=True)
    make_node("d-draining", cordoned=True, draining=True)
    make_node("e-down-cordoned", status=Node.Status.NOT_READY, cordoned=True)
    client = world.client("viewer")
    assert names(client.get(list_url(), {"state": "ready"})) == ["a-ready"]
    assert names(client.get(list_url(), {"state": "not-ready"})) == ["b-down", "e-down-cordoned"]
    assert names(client.get(list_url(), {"state": ["cordoned", "draining"]})) == ["c-cordoned", "d-draining"]
    bad = client.get(list_url(), {"state": "sleepy"})
    assert bad.status_code == 400
    assert "state" in bad.json()


def test_filter_by_label_selector(world):
    make_node("n1", labels={"zone": "eu-1", "gpu": "true"})
    make_node("n2", labels={"zone": "eu-2"})
    make_node("n3", labels={"zone": "eu-1", "hivemind.io/tenant": "acme"})
    make_node("n4", labels={})
    client = world.client("viewer")
    assert names(client.get(list_url(), {"label": "zone=eu-1"})) == ["n1", "n3"]
    assert names(client.get(list_url(), {"label": "zone=eu-1,gpu"})) == ["n1"]
    assert names(client.get(list_url(), {"label": ["zone=eu-1", "!gpu"]})) == ["n3"]
    assert names(client.get(list_url(), {"label": "zone!=eu-1"})) == ["n2", "n4"]
    assert names(client.get(list_url(), {"label": "hivemind.io/tenant=acme"})) == ["n3"]
    assert names(client.get(list_url(), {"label": "zone"})) == ["n1", "n2", "n3"]
    bad = client.get(list_url(), {"label": "Zone=eu-1"})
    assert bad.status_code == 400
    assert "label key 'Zone' must be" in bad.json()["label"][0]
    assert client.get(list_url(), {"label": "zone=a=b"}).status_code == 400


# --- labels ------------------------------------------------------------------------------------


def test_staff_set_and_remove_labels_and_it_is_audited(world, edge):
    client = world.client("staff")
    response = client.post(
        action_url(edge.name, "label"), {"set": {"disk": "ssd", "zone": "eu-2"}, "remove": []}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["labels"] == {"zone": "eu-2", "disk": "ssd"}
    response = client.post(action_url(edge.name, "label"), {"remove": ["zone", "never-set"]}, format="json")
    assert response.json()["labels"] == {"disk": "ssd"}
    edge.refresh_from_db()
    assert edge.labels == {"disk": "ssd"}
    events = AuditEvent.objects.filter(action="node.label", object_repr="edge-1").order_by("id")
    assert [e.changes["labels"]["to"] for e in events] == [{"zone": "eu-2", "disk": "ssd"}, {"disk": "ssd"}]
    assert events[0].actor_name == "staff"
    assert events[0].tenant is None


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"set": {"Zone": "x"}}, "set", "label key 'Zone' must be 1-63 lower-case letters"),
        ({"set": {"zone": "eu 1"}}, "set", "label 'zone': value 'eu 1' must be at most 63"),
        ({"set": {"zone": "x" * 64}}, "set", "must be at most 63"),
        ({"set": {"-zone": "x"}}, "set", "label key '-zone' must be"),
        ({"remove": ["bad key"]}, "remove", "label key 'bad key' must be"),
        ({"set": {"zone": "a"}, "remove": ["zone"]}, "remove", "label 'zone' is both set and removed"),
        ({}, "detail", "name at least one label to set or remove"),
        ({"set": ["zone=eu-1"]}, "set", 'Expected a dictionary of items but got type "list".'),
        ({"remove": "zone"}, "remove", 'Expected a list of items but got type "str".'),
    ],
)
def test_label_validation_names_the_field(world, edge, body, field, message):
    response = world.client("staff").post(action_url(edge.name, "label"), body, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()[field]
    assert message in (errors if isinstance(errors, str) else errors[0]), errors
    edge.refresh_from_db()
    assert edge.labels == {"zone": "eu-1"}


# --- taints ------------------------------------------------------------------------------------


def test_taints_add_replace_and_remove(world, edge):
    client = world.client("staff")

    def taint(body):
        response = client.post(action_url(edge.name, "taint"), body, format="json")
        assert response.status_code == 200, response.content
        return response.json()["taints"]

    assert taint(
        {
            "add": [
                {"key": "gpu", "value": "true", "effect": "NoSchedule"},
                {"key": "gpu", "effect": "NoExecute"},
                {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"},
            ]
        }
    ) == [
        {"key": "gpu", "value": "", "effect": "NoExecute"},
        {"key": "gpu", "value": "true", "effect": "NoSchedule"},
        {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"},
    ]
    # One taint per key and effect: a new value replaces the old one.
    assert {"key": "gpu", "value": "a100", "effect": "NoSchedule"} in taint(
        {"add": [{"key": "gpu", "value": "a100", "effect": "NoSchedule"}]}
    )
    assert taint({"remove": [{"key": "gpu", "effect": "NoExecute"}]}) == [
        {"key": "gpu", "value": "a100", "effect": "NoSchedule"},
        {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"},
    ]
    assert taint({"remove": [{"key": "gpu"}, {"key": "not-there"}]}) == [
        {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}
    ]
    assert AuditEvent.objects.filter(action="node.taint").count() == 4


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (
            {"add": [{"key": "gpu", "effect": "Sometimes"}]},
            ("add", "0", "effect"),
            "expected one of NoSchedule, PreferNoSchedule, NoExecute, got 'Sometimes'",
        ),
        ({"add": [{"key": "gpu"}]}, ("add", "0", "effect"), "This field is required."),
        ({"add": [{"key": "GPU", "effect": "NoSchedule"}]}, ("add",), "taint key 'GPU' must be"),
        ({"add": [{"key": "gpu", "value": "a:b", "effect": "NoSchedule"}]}, ("add",), "value 'a:b' must be"),
        ({"remove": [{"key": "gpu", "effect": "Never"}]}, ("remove", "0", "effect"), "got 'Never'"),
        ({"remove": [{"key": "bad key"}]}, ("remove",), "taint key 'bad key' must be"),
        ({}, ("detail",), "name at least one taint to add or remove"),
    ],
)
def test_taint_validation_names_the_field(world, edge, body, path, message):
    response = world.client("staff").post(action_url(edge.name, "taint"), body, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()
    for step in path:
        errors = errors[step]
    text = errors if isinstance(errors, str) else errors[0]
    assert message in text, response.json()
    edge.refresh_from_db()
    assert edge.taints == []


# --- cordon, drain, remove ---------------------------------------------------------------------


def test_cordon_drain_uncordon(world, edge):
    client = world.client("staff")
    body = client.post(action_url(edge.name, "cordon")).json()
    assert (body["state"], body["cordoned"], body["draining"], body["schedulable"]) == ("cordoned", True, False, False)
    body = client.post(action_url(edge.name, "drain")).json()
    assert (body["state"], body["cordoned"], body["draining"]) == ("draining", True, True)
    body = client.post(action_url(edge.name, "uncordon")).json()
    assert (body["state"], body["cordoned"], body["draining"], body["schedulable"]) == ("ready", False, False, True)
    # Doing it again changes nothing and records nothing more.
    client.post(action_url(edge.name, "uncordon"))
    actions = list(AuditEvent.objects.filter(object_repr="edge-1").order_by("id").values_list("action", flat=True))
    assert actions == ["node.cordon", "node.drain", "node.uncordon"]


def test_remove_a_ready_node_with_containers_is_refused_naming_them(world, edge):
    app, _ = make_app(world.a, "web")
    make_container(world.a, edge, app=app, name="web-0", state=Container.State.RUNNING)
    make_container(world.a, edge, app=app, name="web-1", state=Container.State.PENDING)
    make_container(world.a, edge, app=app, name="web-old", state=Container.State.REMOVED)
    response = world.client("staff").delete(detail_url(edge.name))
    assert response.status_code == 409
    assert response.json() == {
        "detail": "node edge-1 is ready and still has 2 container(s): web-0, web-1; drain it and wait until "
        "they have moved, or stop its agent, before removing it",
        "code": "node_not_empty",
    }
    assert Node.objects.filter(name="edge-1").exists()


def test_remove_a_not_ready_node_keeps_its_containers_history(world, edge):
    running = make_container(world.a, edge, state=Container.State.RUNNING)
    Node.objects.filter(pk=edge.pk).update(status=Node.Status.NOT_READY)
    assert world.client("staff").delete(detail_url(edge.name)).status_code == 204
    assert not Node.objects.filter(name="edge-1").exists()
    running.refresh_from_db()
    assert running.node is None
    assert AuditEvent.objects.filter(action="node.remove", object_repr="edge-1").exists()


def test_remove_a_ready_node_without_containers(world, edge):
    make_container(world.a, edge, state=Container.State.REMOVED)
    assert world.client("staff").delete(detail_url(edge.name)).status_code == 204
    assert not Node.objects.exists()


def test_a_label_selector_with_a_percent_sign_is_a_400_not_a_500(world, edge):
    """Found by the schemathesis fuzz: the message quoting the selector was %-formatted."""
    response = world.client("viewer").get(reverse("api:node-list"), {"label": "%s%d\x81<!"})
    assert response.status_code == 400
    assert "%s%d" in response.json()["label"][0]
