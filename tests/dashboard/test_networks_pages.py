"""The dashboard's Networks pages through Django's test client: what a member of the tenant
sees (prefixes, VNI, node ranges, members and their addresses, apps, labels), the navigation,
and the API's scoping (another tenant's network is a 404 and never listed)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from hivemind.applications.models import App, Container
from networking import ipam, services
from networking.models import Address, Network
from tenants import services as tenant_services
from tests.api_suite import ROLE_ORDER
from tests.dashboard.conftest import deploy


def text(response) -> str:
    return response.content.decode()


def join(network: Network, app: App, node, replica: int) -> Address:
    """Replica `replica` of `app` on `node`, with addresses on `network` as the start step records them."""
    slot = ipam.node_range(network, node)
    container = Container.objects.create(
        tenant=app.tenant, app=app, revision=app.revision, replica=replica, node=node, name=f"{app.name}-{replica}",
        state=Container.State.RUNNING,
    )  # fmt: skip
    return Address.objects.create(
        network=network, container=container, node=node,
        ipv4=str(ipaddress.ip_network(slot.range4)[2 + replica]) if slot.range4 else None,
        ipv6=str(ipaddress.ip_network(slot.range6)[2 + replica]) if slot.range6 else None,
    )  # fmt: skip


@pytest.fixture
def nets(world, ready_node) -> dict:
    """`backend` in tenant A (labels, default deny, two members of app `web`); `secret-net` in B."""
    staff = world.users["staff"]
    backend = services.network_create(
        tenant=world.a, name="backend", actor=staff, labels={"tier": "db"}, default_deny=True
    )
    web = deploy(world.a, "web", staff, replicas=2, networks=["backend"])
    addresses = [join(backend, web, ready_node, 0), join(backend, web, ready_node, 1)]
    secret = services.network_create(tenant=world.b, name="secret-net", actor=staff)
    hidden = deploy(world.b, "secret-app", staff, networks=["secret-net"])
    join(secret, hidden, ready_node, 0)
    return {"backend": backend, "web": web, "addresses": addresses, "secret": secret}


@pytest.mark.parametrize("role", ROLE_ORDER, ids=[r.value for r in ROLE_ORDER])
def test_every_member_sees_the_list_and_a_networks_page(world, nets, login, role):
    client = login(role.value)
    backend = nets["backend"]
    listed = client.get("/networks/")
    assert listed.status_code == 200
    page = text(listed)
    assert f'<a href="/networks/{backend.pk}/">backend</a>' in page
    assert backend.subnet4 in page and backend.subnet6 in page and f"<td>{backend.vni}</td>" in page
    assert '<span class="tag">tier=db</span>' in page
    assert "secret-net" not in page
    row = re.search(rf'<tr><td><a href="/networks/{backend.pk}/">.*?</tr>', page, re.S).group(0)
    assert "<td>yes</td>" in row and "<td>2</td>" in row  # default deny; two members

    detail = client.get(f"/networks/{backend.pk}/")
    assert detail.status_code == 200
    page = text(detail)
    assert f"<dt>VNI</dt><dd>{backend.vni}</dd>" in page
    assert f"<code>{backend.subnet4}</code>" in page and f"<code>{backend.subnet6}</code>" in page
    assert "yes: traffic reaches its members only where a network policy allows it" in page
    assert '<span class="tag">tier=db</span>' in page
    slot = backend.node_ranges.get()
    for value in (slot.range4, slot.gateway4, slot.range6, slot.gateway6):
        assert f"<code>{value}</code>" in page, value
    for address in nets["addresses"]:
        assert f"<td>{address.container.name}</td>" in page
        assert f"<code>{address.ipv4}</code>" in page and f"<code>{address.ipv6}</code>" in page
    assert f'<a href="/apps/{nets["web"].pk}/">web</a>' in page  # the app using it
    assert "secret" not in page


def test_the_navigation_links_the_networks_page(world, nets, login):
    client = login("viewer")
    assert '<a href="/networks/">Networks</a>' in text(client.get("/"))
    assert '<a href="/networks/" aria-current="page">Networks</a>' in text(client.get("/networks/"))
    page = text(client.get(f"/networks/{nets['backend'].pk}/"))
    assert '<a href="/networks/" aria-current="page">Networks</a>' in page
    assert '<p class="crumbs"><a href="/networks/">Networks</a> /</p>' in page


def test_another_tenants_network_is_a_404_and_never_listed(world, nets, login):
    secret = nets["secret"]
    client = login("owner")  # the strongest role in tenant A, nothing in B
    response = client.get(f"/networks/{secret.pk}/")
    assert response.status_code == 404
    assert "secret" not in text(response) and "Traceback" not in text(response)
    assert client.get("/networks/999999/").status_code == 404
    assert "secret" not in text(client.get("/networks/"))
    assert client.post("/tenant/switch/", {"tenant": "tenant-b"}).status_code == 404

    # Staff see B's network once B is their current tenant, and then not A's.
    staff = login("staff")
    assert staff.get(f"/networks/{secret.pk}/").status_code == 404  # tenant-a is current
    switched = staff.post("/tenant/switch/", {"tenant": "tenant-b", "next": f"/networks/{nets['backend'].pk}/"})
    assert (switched.status_code, switched["Location"]) == (302, "/networks/")
    assert staff.get(f"/networks/{secret.pk}/").status_code == 200
    assert staff.get(f"/networks/{nets['backend'].pk}/").status_code == 404
    assert "backend" not in text(staff.get("/networks/"))


def test_anonymous_users_are_sent_to_the_login_page(world, nets):
    client = Client()
    for url in ("/networks/", f"/networks/{nets['backend'].pk}/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next="), url


def test_a_network_with_no_members_says_so(world, login):
    empty = services.network_create(tenant=world.a, name="empty", actor=world.users["staff"], ipv6=False)
    page = text(login("viewer").get(f"/networks/{empty.pk}/"))
    assert "No node holds a range yet" in page and "No members." in page
    assert '<p class="muted" id="network-apps">None.</p>' in page
    assert "<dt>IPv6 prefix</dt><dd><code>—</code></dd>" in page
    assert "No labels." in page


def test_the_pages_cost_the_same_number_of_queries_for_few_or_many_rows(world, ready_node, login):
    """No N+1: the list does not grow with its networks, nor a network's page with its members."""
    staff = world.users["staff"]
    tenant_services.quota_set(tenant=world.a, limits={"networks": 100, "apps": 100}, actor=staff)
    client = login("viewer")
    backend = services.network_create(tenant=world.a, name="backend", actor=staff)
    counts: dict[str, list[int]] = {}
    for total in (3, 12):
        while Network.objects.filter(tenant=world.a).count() < total:
            services.network_create(tenant=world.a, name=f"net-{Network.objects.count()}", actor=staff)
        while Address.objects.filter(network=backend).count() < total:
            n = App.objects.filter(tenant=world.a).count()
            join(backend, deploy(world.a, f"app-{n}", staff, replicas=0, networks=["backend"]), ready_node, n)
        for url in ("/networks/", f"/networks/{backend.pk}/"):
            client.get(url)  # the first request of a session also stores the current tenant in it
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200
            counts.setdefault(url, []).append(len(queries))
    for url, (few, many) in counts.items():
        assert few == many, (url, few, many)


def test_the_tenants_policies_are_shown_in_words_and_no_other_tenants(world, nets, login):
    staff = world.users["staff"]
    services.policy_apply(
        tenant=world.a, name="web-from-api",
        spec={"apps": ["web"], "ingress": [{"from": [{"app": "api"}], "ports": [{"protocol": "tcp", "port": 8080}]}]},
        actor=staff,
    )  # fmt: skip
    services.policy_apply(tenant=world.b, name="their-policy", spec={"egress": []}, actor=staff)
    page = text(login("viewer").get("/networks/"))
    assert "web-from-api" in page and "app api on tcp/8080" in page
    assert "their-policy" not in page
