"""The node admin: capacity columns, and cordon/drain/remove actions through the services."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from hivemind.applications.models import Container
from hivemind.nodes.models import Node
from tests.nodes.conftest import make_container, make_node

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(world) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("node-admin", password="pw-for-tests-only"))
    return client


def test_list_and_change_page_show_capacity_and_allocation(world, admin_client):
    edge = make_node("edge-1", labels={"zone": "eu-1"})
    make_container(world.a, edge, cpu_millis=1500, memory_bytes=2**30, state=Container.State.RUNNING)
    listing = admin_client.get("/admin/nodes/node/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "1.5 / 4 cores" in html and "zone=eu-1" in html
    page = admin_client.get(f"/admin/nodes/node/{edge.pk}/change/")
    assert page.status_code == 200
    assert "1.0\xa0GB / 8.0\xa0GB" in page.content.decode()


def test_actions_go_through_the_services(world, admin_client):
    busy = make_node("busy")
    make_container(world.a, busy, state=Container.State.RUNNING)
    idle = make_node("idle")

    def act(action: str, *nodes: Node):
        response = admin_client.post(
            "/admin/nodes/node/", {"action": action, "_selected_action": [n.pk for n in nodes]}, follow=True
        )
        return [str(m) for m in response.context["messages"]]

    assert act("drain_selected", busy) == ["drained 1 node(s)"]
    busy.refresh_from_db()
    assert (busy.cordoned, busy.draining) == (True, True)
    assert act("uncordon_selected", busy) == ["uncordoned 1 node(s)"]
    messages = act("remove_selected", busy, idle)
    assert messages[0].startswith("node busy is ready and still has 1 container(s)")
    assert messages[1] == "removed 1 node(s)"
    assert list(Node.objects.values_list("name", flat=True)) == ["busy"]
