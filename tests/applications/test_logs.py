"""An app's logs and stats through the API: the view asks the node's agent (a real worker on
node.<name>) and the agent reads the suite's real Docker daemon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from hivemind.applications import logs, services
from hivemind.applications.models import App, Container
from hivemind.nodes.models import Node
from hivemind.workflows.models import WorkflowState
from tests.applications.conftest import finished

HERE = settings.NODE_NAME  # the node the fixture registers: this machine

pytestmark = pytest.mark.django_db(transaction=True)

ECHO = {
    "image": "hivemind/busybox:latest",
    "command": "sh -c 'echo hello; echo from $(hostname); sleep 3600'",
    "resources": {"cpu": "100m", "memory": "16Mi", "memory_limit": "64Mi"},
}


@pytest.fixture
def echo(platform_processes, world, node) -> App:
    """Two replicas that each print two lines, then sleep."""
    platform_processes("worker")
    app = services.app_deploy(tenant=world.a, name="echo", spec=ECHO, replicas=2, actor=world.users["staff"])
    workflow = finished(app.workflow)
    assert workflow.state == WorkflowState.SUCCEEDED, workflow.error
    return app


def logs_of(world, app: App, who: str = "viewer", **params):
    return world.client(who).get(f"/api/v1/apps/{app.pk}/logs/", params)


def split(line: str) -> tuple[str, datetime, str]:
    prefix, stamp, text = line.split(" ", 2)
    return prefix, datetime.fromisoformat(stamp), text


def test_logs_of_every_replica_merged_in_time_order(world, echo):
    response = logs_of(world, echo)  # viewers may read logs
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["app"], body["tail"], body["since"]) == ("echo", 100, None)
    parsed = [split(line) for line in body["lines"]]
    assert sorted((prefix, text) for prefix, _, text in parsed) == [
        ("[echo-0]", "from echo-0"),
        ("[echo-0]", "hello"),
        ("[echo-1]", "from echo-1"),
        ("[echo-1]", "hello"),
    ]
    stamps = [stamp for _, stamp, _ in parsed]
    assert stamps == sorted(stamps)
    assert all(abs(datetime.now(UTC) - stamp) < timedelta(minutes=5) for stamp in stamps)
    assert [(c["replica"], c["node"], c["state"], c["lines"], c["error"]) for c in body["containers"]] == [
        (0, HERE, "running", 2, None),
        (1, HERE, "running", 2, None),
    ]

    last = logs_of(world, echo, tail=1, replica=1).json()
    assert [split(line)[::2] for line in last["lines"]] == [("[echo-1]", "from echo-1")]
    assert [c["replica"] for c in last["containers"]] == [1]

    assert len(logs_of(world, echo, since="1h").json()["lines"]) == 4
    newest = max(stamps)
    after = logs_of(world, echo, since=(newest + timedelta(seconds=1)).isoformat()).json()
    assert after["lines"] == []
    assert after["since"] == (newest + timedelta(seconds=1)).isoformat()
    assert len(logs_of(world, echo, since="2000-01-01T00:00:00").json()["lines"]) == 4  # no offset: UTC


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"tail": 0}, "tail", "greater than or equal to 1"),
        ({"tail": 10001}, "tail", "less than or equal to 10000"),
        ({"tail": "all"}, "tail", "valid integer"),
        ({"since": "yesterday"}, "since", "an ISO 8601 time such as 2026-01-31T12:00:00Z, or how long ago"),
        ({"since": "NaN"}, "since", "an ISO 8601 time"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since", "from 1970 to 9998"),
        ({"since": "0"}, "since", "a time before now"),
        ({"replica": -1}, "replica", "greater than or equal to 0"),
    ],
)
def test_bad_query_is_400_naming_the_field(world, params, field, message):
    app = App.objects.create(tenant=world.a, name="quiet", replicas=0)  # checked before any node is asked
    response = logs_of(world, app, **params)
    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]
    assert message in response.json()[field][0]


def test_unknown_replica_is_400_naming_it(world, echo):
    response = logs_of(world, echo, replica=7)
    assert response.status_code == 400
    assert response.json() == {"replica": ["app echo has no replica 7 (replicas: 0, 1)"]}


def test_stats_of_every_replica(world, echo):
    response = world.client("viewer").get(f"/api/v1/apps/{echo.pk}/stats/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["app"] == "echo"
    assert [(c["replica"], c["node"], c["error"]) for c in body["containers"]] == [
        (0, HERE, None),
        (1, HERE, None),
    ]
    for replica in body["containers"]:
        assert replica["memory_usage_bytes"] > 0
        assert replica["memory_limit_bytes"] == 64 * 2**20  # the spec's memory_limit
        assert 0 < replica["memory_percent"] < 100
        assert replica["cpu_percent"] >= 0
        assert replica["network_rx_bytes"] >= 0 and replica["network_tx_bytes"] >= 0
        assert replica["pids"] >= 1


def test_another_tenants_app_does_not_exist_for_the_caller(world, echo):
    for who in ("outsider", "staff"):  # staff outside tenant A's context still see it: a control
        client = world.client(who)
        for action in ("logs", "stats"):
            status = client.get(f"/api/v1/apps/{echo.pk}/{action}/").status_code
            assert status == (404 if who == "outsider" else 200), (who, action, status)
    assert world.client(None).get(f"/api/v1/apps/{echo.pk}/logs/").status_code == 401
    # A tenant-B header is a 404 for A's app even to staff.
    response = world.client("staff").get(f"/api/v1/apps/{echo.pk}/logs/", HTTP_X_HIVEMIND_TENANT=world.b.slug)
    assert response.status_code == 404


def test_a_node_that_does_not_answer_gets_an_entry_not_an_error(world, echo, monkeypatch):
    monkeypatch.setattr(logs, "ANSWER_TIMEOUT", 4.0)  # stats take Docker a second or two
    ghost = Node.objects.create(name="ghost", status=Node.Status.READY, cpu_millis=1000, memory_bytes=2**30)
    down = Node.objects.create(name="down", status=Node.Status.NOT_READY, cpu_millis=1000, memory_bytes=2**30)
    for replica, where in ((2, ghost), (3, down)):
        Container.objects.create(
            tenant=world.a,
            app=echo,
            revision=echo.revision,
            replica=replica,
            node=where,
            name=f"echo-{where.name}",
            state=Container.State.RUNNING,
        )

    body = logs_of(world, echo).json()
    assert len(body["lines"]) == 4  # the answering node's replicas are all there
    errors = {c["replica"]: c["error"] for c in body["containers"]}
    assert errors == {
        0: None,
        1: None,
        2: "node ghost did not answer within 4 s",
        3: "node down is not ready; its agent was not asked",
    }

    response = world.client("viewer").get(f"/api/v1/apps/{echo.pk}/stats/")
    assert response.status_code == 200
    stats = {c["replica"]: c for c in response.json()["containers"]}
    assert stats[2]["error"] == "node ghost did not answer within 4 s"
    assert stats[2]["memory_usage_bytes"] is None
    assert stats[0]["memory_usage_bytes"] > 0


def test_a_replica_docker_no_longer_has_says_so(world, echo, docker_client):
    gone = echo.containers.get(replica=1)
    docker_client.containers.get(gone.name).remove(force=True)
    body = logs_of(world, echo).json()
    assert {split(line)[0] for line in body["lines"]} == {"[echo-0]"}
    errors = {c["replica"]: c["error"] for c in body["containers"]}
    assert errors[1] == f"{gone.name} is not on node {HERE} (not created yet, or removed)"
