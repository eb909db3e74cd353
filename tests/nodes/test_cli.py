"""`hivemind node` against a live server: listing, labels, taints, cordon/drain, remove, exit codes."""

from __future__ import annotations

import json

import pytest
import yaml
from django.contrib.auth import get_user_model

from hivemind.applications.models import Container
from hivemind.nodes.models import Node
from tenants import services
from tests.cli.conftest import one_error_line
from tests.nodes.conftest import make_app, make_container, make_node

pytestmark = pytest.mark.django_db(transaction=True)
LS_HEADER = ("NAME", "STATE", "ADDRESS", "CPU", "MEMORY", "CONTAINERS", "LABELS", "TAINTS", "HEARTBEAT")


@pytest.fixture
def server(live_server) -> dict:
    """Staff `root`, `alice` (owner of acme), nodes edge-1 (one running container) and edge-2."""
    users = get_user_model().objects
    root, alice = users.create_user("root", is_staff=True), users.create_user("alice")
    acme = services.tenant_create(name="Acme", slug="acme", created_by=root)
    services.membership_add(tenant=acme, user=alice, role="owner", actor=root)
    edge = make_node("edge-1", labels={"zone": "eu-1"}, taints=[{"key": "gpu", "value": "", "effect": "NoSchedule"}])
    make_node("edge-2", status=Node.Status.NOT_READY)
    app, _ = make_app(acme, "web")
    make_container(acme, edge, app=app, name="web-0", cpu_millis=500, memory_bytes=2**30, state="running")
    tokens = {user.username: services.api_token_create(user=user, name="cli")[1] for user in (root, alice)}
    return {"url": live_server.url, "tokens": tokens}


def login(cli, server: dict, who: str) -> None:
    result = cli("login", "--server", server["url"], "--token", server["tokens"][who])
    assert result.code == 0, result


def test_ls_and_info_for_any_member(cli, server):
    login(cli, server, "alice")
    table = cli("node", "ls")
    assert table.code == 0, table
    header, *rows = table.out.splitlines()
    assert tuple(header.split()) == LS_HEADER
    assert rows[0].split()[:8] == ["edge-1", "ready", "10.0.0.1", "0.5/4", "1.0", "GiB/8.0", "GiB", "1"]
    assert "zone=eu-1" in rows[0] and "gpu:NoSchedule" in rows[0]
    assert rows[1].split()[:2] == ["edge-2", "not-ready"]

    assert [n["name"] for n in json.loads(cli("node", "ls", "--state", "not-ready", "-o", "json").out)] == ["edge-2"]
    assert [n["name"] for n in yaml.safe_load(cli("node", "ls", "-l", "zone=eu-1", "-o", "yaml").out)] == ["edge-1"]
    none = cli("node", "ls", "-l", "zone=mars")
    assert none.code == 0 and none.err == "No nodes match.\n", none

    info = cli("node", "info", "edge-1")
    assert info.code == 0, info
    assert "CPU:" in info.out and "0.5 of 4 cores allocated, 3.5 free" in info.out
    assert "Docker endpoint" not in info.out  # staff only
    assert json.loads(cli("node", "info", "edge-1", "-o", "json").out)["containers"] == 1

    unknown = cli("node", "info", "nope")
    assert unknown.code == 6, unknown
    assert one_error_line(unknown) == "node nope not found"


def test_staff_label_taint_cordon_drain(cli, server):
    login(cli, server, "root")
    labelled = cli("node", "label", "edge-1", "disk=ssd", "zone-")
    assert labelled.code == 0, labelled
    assert labelled.out == "Node edge-1 labels: disk=ssd\n"

    tainted = cli("node", "taint", "edge-1", "spot=yes:PreferNoSchedule", "maint:NoExecute", "gpu-")
    assert tainted.code == 0, tainted
    assert tainted.out == "Node edge-1 taints: maint:NoExecute,spot=yes:PreferNoSchedule\n"
    node = Node.objects.get(name="edge-1")
    assert node.labels == {"disk": "ssd"}
    assert node.taints == [
        {"key": "maint", "value": "", "effect": "NoExecute"},
        {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"},
    ]

    assert cli("node", "cordon", "edge-1").out == "Node edge-1 is cordoned: no new replicas are placed on it.\n"
    drained = cli("node", "drain", "edge-1")
    assert drained.code == 0, drained
    assert "draining" in drained.out and "its 1 container(s) are moved away" in drained.out
    assert json.loads(cli("node", "info", "edge-1", "-o", "json").out)["state"] == "draining"
    assert cli("node", "uncordon", "edge-1").out == "Node edge-1 is now ready.\n"
    assert "Docker endpoint" in cli("node", "info", "edge-1").out


def test_bad_input_exit_codes(cli, server):
    login(cli, server, "root")
    bad_effect = cli("node", "taint", "edge-1", "gpu=true:Sometimes")
    assert bad_effect.code == 2, bad_effect
    assert "the effect must be one of NoSchedule, PreferNoSchedule, NoExecute" in one_error_line(bad_effect)
    assert cli("node", "label", "edge-1", "zone").code == 2

    bad_key = cli("node", "label", "edge-1", "Zone=x")
    assert bad_key.code == 1, bad_key
    assert one_error_line(bad_key).startswith("set: label key 'Zone' must be 1-63 lower-case letters")

    assert cli("node", "cordon", "nope").code == 6


def test_members_may_not_change_nodes(cli, server):
    login(cli, server, "alice")
    refused = cli("node", "cordon", "edge-1")
    assert refused.code == 5, refused
    assert one_error_line(refused) == "only platform staff may change nodes"
    assert cli("node", "rm", "edge-2", "--yes").code == 5
    assert not Node.objects.get(name="edge-1").cordoned


def test_rm(cli, server):
    login(cli, server, "root")
    busy = cli("node", "rm", "edge-1", "--yes")
    assert busy.code == 7, busy
    assert one_error_line(busy).startswith("node edge-1 is ready and still has 1 container(s): web-0;")

    wrong = cli("node", "rm", "edge-2", input="edge-3\n")
    assert wrong.code == 1 and "nothing was removed" in wrong.err, wrong
    removed = cli("node", "rm", "edge-2", input="edge-2\n")
    assert removed.code == 0, removed
    assert removed.out == "Removed node edge-2.\n"
    assert not Node.objects.filter(name="edge-2").exists()

    Container.objects.update(state=Container.State.REMOVED)
    assert cli("node", "rm", "edge-1", "--yes").code == 0
