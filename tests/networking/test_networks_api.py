"""Networks and IP pools through the API: the shared permission suite, IPAM's answers, quotas,
bad input and the 409s. No node is involved: a network's devices appear on a node only when a
replica joins it there (tests/networking/test_cluster.py)."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.urls import reverse

from networking import ipam, services
from networking.models import IPPool, Network, NetworkPolicy, NodeRange
from tenants.models import Role
from tenants.services import quota_set
from tests.api_suite import StaffOnlyAPITests, TenantOwnedAPITests


class TestNetworkAPI(TenantOwnedAPITests):
    basename = "network"

    def make(self, world, tenant):
        return services.network_create(tenant=tenant, name=f"net-{Network.objects.count()}", actor=world.users["staff"])

    def create_payload(self, world, tenant):
        return {"tenant": tenant.slug, "name": f"new-{Network.objects.count()}", "labels": {"tier": "db"}}

    def update_payload(self, world):
        return {"labels": {"tier": "web"}}


class TestIPPoolAPI(StaffOnlyAPITests):
    basename = "ip-pool"
    missing_key = "999999"

    def make(self, world):
        count = IPPool.objects.count()
        return services.pool_create(name=f"pool-{count}", cidr=f"10.{200 + count}.0.0/16", actor=world.users["staff"])

    def create_payload(self, world):
        return {"name": f"new-{IPPool.objects.count()}", "cidr": f"fd77:{IPPool.objects.count()}::/48"}

    def update_payload(self, world):
        return {"default_prefix": 26}


def test_dual_stack_by_default_with_prefixes_from_the_default_pools(world):
    client = world.client(Role.OPERATOR.value)
    response = client.post(reverse("api:network-list"), {"tenant": world.a.slug, "name": "backend"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    v4, v6 = ipaddress.ip_network(body["subnet4"]), ipaddress.ip_network(body["subnet6"])
    assert v4.prefixlen == 24 and v4.subnet_of(ipaddress.ip_network(ipam.DEFAULT_V4))
    assert v6.prefixlen == 64 and v6.subnet_of(ipaddress.ip_network("fc00::/7"))  # a unique local address
    assert body["vni"] >= services.VNI_BASE
    only4 = client.post(
        reverse("api:network-list"), {"tenant": world.a.slug, "name": "legacy", "ipv6": False, "prefix4": 26},
        format="json",
    )  # fmt: skip
    assert only4.status_code == 201, only4.content
    assert only4.json()["subnet6"] is None and only4.json()["subnet4"].endswith("/26")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "Not_A_Label"}, "name"),
        ({"name": "x", "ipv4": False, "ipv6": False}, "ipv4"),
        ({"name": "x", "prefix4": 30}, "prefix4"),
        ({"name": "x", "prefix6": 20}, "prefix6"),
        ({"name": "x", "labels": {"Bad Key": "v"}}, "labels"),
        ({"name": "x", "labels": ["a"]}, "labels"),
        ({"name": "x", "vni": 5}, "vni"),
        ({"name": "x", "subnet4": "10.0.0.0/8"}, "subnet4"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(world, payload, field):
    response = world.client("staff").post(
        reverse("api:network-list"), {"tenant": world.a.slug, **payload}, format="json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()


def created(client, tenant, name: str) -> bool:
    response = client.post(reverse("api:network-list"), {"tenant": tenant.slug, "name": name}, format="json")
    return response.status_code == 201


def test_names_are_unique_per_tenant_and_the_quota_holds(world):
    staff = world.users["staff"]
    services.network_create(tenant=world.a, name="one", actor=staff)
    client = world.client("staff")
    again = client.post(reverse("api:network-list"), {"tenant": world.a.slug, "name": "one"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "network_exists"
    assert (
        client.post(reverse("api:network-list"), {"tenant": world.b.slug, "name": "one"}, format="json").status_code
        == 201
    )
    quota_set(tenant=world.a, limits={"networks": 2}, actor=staff)
    assert (
        client.post(reverse("api:network-list"), {"tenant": world.a.slug, "name": "two"}, format="json").status_code
        == 201
    )
    over = client.post(reverse("api:network-list"), {"tenant": world.a.slug, "name": "three"}, format="json")
    assert over.status_code == 409 and over.json()["code"] == "quota_exceeded", over.content
    # The default network every tenant has does not count; deleting gives the quota back.
    services.network_default(world.a)
    client.delete(reverse("api:network-detail", args=[Network.objects.get(tenant=world.a, name="two").pk]))
    assert (
        client.post(reverse("api:network-list"), {"tenant": world.a.slug, "name": "three"}, format="json").status_code
        == 201
    )


def test_a_network_in_use_cannot_be_deleted(world):
    from hivemind.applications import services as app_services

    staff = world.users["staff"]
    network = services.network_create(tenant=world.a, name="shared", actor=staff)
    spec = {"image": "hivemind/busybox:latest", "networks": ["shared"]}
    app_services.app_deploy(tenant=world.a, name="web", spec=spec, actor=staff)
    response = world.client("staff").delete(reverse("api:network-detail", args=[network.pk]))
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "network_in_use" and "web" in response.json()["detail"]
    assert Network.objects.filter(pk=network.pk).exists()


def test_an_app_naming_a_network_its_tenant_lacks_is_a_400(world):
    services.network_create(tenant=world.b, name="theirs", actor=world.users["staff"])
    body = {"tenant": world.a.slug, "name": "web", "spec": {"image": "busybox", "networks": ["theirs"]}}
    response = world.client("staff").post(reverse("api:app-list"), body, format="json")
    assert response.status_code == 400, response.content
    assert "networks[0]" in response.json()


def test_an_exhausted_pool_is_a_409_saying_so(world):
    staff = world.users["staff"]
    services.pool_create(name="tiny", cidr="10.99.0.0/23", actor=staff, is_default=True)
    services.network_create(tenant=world.a, name="n1", actor=staff, ipv6=False)
    services.network_create(tenant=world.a, name="n2", actor=staff, ipv6=False)
    response = world.client("staff").post(
        reverse("api:network-list"), {"tenant": world.a.slug, "name": "n3", "ipv6": False}, format="json"
    )
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "pool_exhausted" and "10.99.0.0/23" in response.json()["detail"]


def test_pools_refuse_overlaps_and_deletion_while_used(world):
    staff = world.client("staff")
    assert (
        staff.post(reverse("api:ip-pool-list"), {"name": "a", "cidr": "10.50.0.0/16"}, format="json").status_code == 201
    )
    overlap = staff.post(reverse("api:ip-pool-list"), {"name": "b", "cidr": "10.50.128.0/17"}, format="json")
    assert overlap.status_code == 400 and "overlaps" in overlap.json()["cidr"][0]
    bad = staff.post(reverse("api:ip-pool-list"), {"name": "c", "cidr": "10.60.0.1/16"}, format="json")
    assert bad.status_code == 400 and "cidr" in bad.json()
    network = services.network_create(tenant=world.a, name="uses", actor=world.users["staff"])
    pool = network.pool4
    refused = staff.delete(reverse("api:ip-pool-detail", args=[pool.pk]))
    assert refused.status_code == 409 and refused.json()["code"] == "pool_in_use"


def test_node_slots_do_not_overlap_and_run_out_with_a_409(world):
    from hivemind.nodes.models import Node

    network = services.network_create(tenant=world.a, name="wide", actor=world.users["staff"])
    nodes = [Node.objects.create(name=f"n{i}") for i in range(9)]
    ranges = [ipam.node_range(network, node) for node in nodes[:8]]
    v4 = [ipaddress.ip_network(r.range4) for r in ranges]
    v6 = [ipaddress.ip_network(r.range6) for r in ranges]
    for group in (v4, v6):
        assert all(not a.overlaps(b) for i, a in enumerate(group) for b in group[i + 1 :])
        assert all(
            n.subnet_of(ipaddress.ip_network(network.subnet4 if n.version == 4 else network.subnet6)) for n in group
        )
    assert len({r.gateway4 for r in ranges}) == 8 and len({r.gateway6 for r in ranges}) == 8
    assert ipam.node_range(network, nodes[0]).pk == ranges[0].pk  # idempotent
    with pytest.raises(ipam.PoolExhausted):
        ipam.node_range(network, nodes[8])


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_never_share_a_prefix(world):
    """200 creations from 20 threads across 20 tenants (each its own database connection)."""
    from tenants import services as tenant_services

    staff = world.users["staff"]
    tenants = [tenant_services.tenant_create(name=f"T{i}", slug=f"t{i}", created_by=staff) for i in range(20)]
    for tenant in tenants:
        quota_set(tenant=tenant, limits={"networks": None}, actor=staff)

    def create(i: int) -> None:
        try:
            services.network_create(tenant=tenants[i % 20], name=f"n{i}", actor=staff)
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(create, range(200)))
    rows = list(Network.objects.filter(tenant__in=tenants).values_list("subnet4", "subnet6", "vni"))
    assert len(rows) == 200
    for column in range(3):
        values = [row[column] for row in rows]
        assert len(set(values)) == 200, f"duplicates in column {column}"
    assert connection.vendor in ("postgresql", "sqlite")
    assert not NodeRange.objects.exists()


class TestNetworkPolicyAPI(TenantOwnedAPITests):
    basename = "network-policy"

    def make(self, world, tenant):
        policy, _ = services.policy_apply(
            tenant=tenant, name=f"p-{NetworkPolicy.objects.count()}", spec={"ingress": []}, actor=world.users["staff"]
        )
        return policy

    def create_payload(self, world, tenant):
        spec = {"apps": ["web"], "ingress": [{"from": [{"app": "api"}], "ports": [{"protocol": "tcp", "port": 80}]}]}
        return {"tenant": tenant.slug, "name": f"new-{NetworkPolicy.objects.count()}", "spec": spec}

    def update_payload(self, world):
        return {"spec": {"egress": []}}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "ingress"),
        ({"ingress": [{"from": [{"cidr": "10.0.0.300/8"}]}]}, "ingress[0].from[0].cidr"),
        ({"ingress": [{"ports": [{"protocol": "tcp", "port": 70000}]}]}, "ingress[0].ports[0].port"),
        ({"ingress": [{"ports": [{"protocol": "sctp", "port": 80}]}]}, "ingress[0].ports[0].protocol"),
        ({"egress": [{"to": [{"pod": "x"}]}]}, "egress[0].to[0]"),
        ({"apps": ["Web!"], "ingress": []}, "apps[0]"),
        ({"ingress": [], "selector": {}}, "spec"),
    ],
)
def test_bad_policies_are_a_400_naming_the_field(world, spec, field):
    body = {"tenant": world.a.slug, "name": "p", "spec": spec}
    response = world.client("staff").post(reverse("api:network-policy-list"), body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()


def test_a_policy_naming_what_does_not_exist_is_kept_with_warnings(world):
    spec = {"apps": ["ghost"], "ingress": [{"from": [{"network": "nowhere"}]}]}
    body = {"tenant": world.a.slug, "name": "p", "spec": spec}
    response = world.client("staff").post(reverse("api:network-policy-list"), body, format="json")
    assert response.status_code == 201, response.content
    warnings = response.json()["warnings"]
    assert any("no app named ghost" in w for w in warnings) and any("no network named nowhere" in w for w in warnings)


def test_a_tenant_goes_with_its_default_network_but_not_with_others(world):
    from tenants import services as tenant_services

    staff = world.users["staff"]
    services.network_default(world.b)
    extra = services.network_create(tenant=world.b, name="extra", actor=staff)
    response = world.client("staff").delete(
        reverse("api:tenant-detail", args=[world.b.slug]), {"confirm": world.b.slug}, format="json"
    )
    assert response.status_code == 409 and "1 networks" in response.json()["detail"], response.content
    services.network_delete(network=extra, actor=staff)
    tenant_services.tenant_delete(tenant=world.b, confirm=world.b.slug, actor=staff)
    assert not Network.objects.filter(tenant_id=world.b.pk).exists()


def test_label_selectors_are_validated_and_warned_about(world):
    client = world.client("staff")
    bad = {"tenant": world.a.slug, "name": "p", "spec": {"labels": {"Bad Key": "x"}, "ingress": []}}
    response = client.post(reverse("api:network-policy-list"), bad, format="json")
    assert response.status_code == 400 and "labels.Bad Key" in response.json(), response.content
    peer = {"ingress": [{"from": [{"labels": {}}]}]}
    response = client.post(
        reverse("api:network-policy-list"), {"tenant": world.a.slug, "name": "p", "spec": peer}, format="json"
    )
    assert response.status_code == 400 and "ingress[0].from[0].labels" in response.json(), response.content
    good = {"tenant": world.a.slug, "name": "p", "spec": {"labels": {"tier": "db"}, "ingress": []}}
    response = client.post(reverse("api:network-policy-list"), good, format="json")
    assert response.status_code == 201, response.content
    assert any("has the labels {'tier': 'db'}" in w for w in response.json()["warnings"])
