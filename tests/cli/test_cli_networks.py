"""`hivemind network` and `hivemind ip-pool` as subprocesses against the real web process
(gunicorn). No container runs: a network's members are Container and Address rows made here,
as the start step would record them."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
import yaml
from django.utils import timezone

from hivemind.applications import services as app_services
from hivemind.applications.models import App, Container
from hivemind.cli import networks as cli_networks
from hivemind.nodes.models import Node
from networking import ipam, services
from networking.models import Address, IPPool, Network
from tests.cli.conftest import login_as, one_error_line

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a flag checked only by the server would exit 3, not 2
SPEC = {"image": "hivemind/busybox:latest", "resources": {"cpu": "10m", "memory": "16Mi"}}


def rows(result) -> list[list[str]]:
    return [line.split() for line in result.out.splitlines()[1:]]


def fields_of(text: str) -> dict[str, str]:
    return {key: value.strip() for key, value in (line.split(":", 1) for line in text.splitlines())}


def member(network: Network, app: App, node: Node, replica: int) -> Address:
    """Replica `replica` of `app` on `node`, with its addresses on `network` in the node's range."""
    slot = ipam.node_range(network, node)
    container = Container.objects.create(
        tenant=app.tenant, app=app, revision=app.revision, replica=replica, node=node, name=f"{app.name}-{replica}",
        state=Container.State.RUNNING,
    )  # fmt: skip
    host = 2 + replica  # .1 is the gateway
    return Address.objects.create(
        network=network, container=container, node=node,
        ipv4=str(ipaddress.ip_network(slot.range4)[host]) if slot.range4 else None,
        ipv6=str(ipaddress.ip_network(slot.range6)[host]) if slot.range6 else None,
    )  # fmt: skip


@pytest.fixture
def edge(transactional_db) -> Node:
    return Node.objects.create(
        name="edge-1", cpu_millis=4000, memory_bytes=2**33, status=Node.Status.READY, last_heartbeat=timezone.now()
    )


def test_the_cli_keeps_the_servers_prefix_limits():
    assert cli_networks.PREFIX_LIMITS == ipam.PREFIX_LIMITS


def test_a_network_from_create_to_rm(cli, web_server, world, edge):
    login_as(cli, web_server, world, "operator")

    created = cli("network", "create", "backend", "--prefix4", "26", "--label", "tier=db", "--default-deny")
    assert created.code == 0, created
    backend = Network.objects.get(tenant=world.a, name="backend")
    assert backend.subnet4.endswith("/26") and backend.subnet6.endswith("/64")
    assert (backend.labels, backend.default_deny) == ({"tier": "db"}, True)
    assert created.out == (
        f"Created network backend in tenant tenant-a: {backend.subnet4} and {backend.subnet6}, VNI {backend.vni}.\n"
    )
    only6 = cli("network", "create", "v6only", "--no-ipv4", "--prefix6", "56", "-o", "json")
    assert only6.code == 0, only6
    body = json.loads(only6.out)
    assert (body["name"], body["subnet4"], body["subnet6"].endswith("/56")) == ("v6only", None, True)

    taken = cli("network", "create", "backend")
    assert taken.code == 7, taken
    assert one_error_line(taken) == "a network named backend exists in tenant tenant-a"

    listed = cli("network", "ls")
    assert listed.code == 0, listed
    assert listed.out.splitlines()[0].split() == [
        "NAME", "STATUS", "IPV4", "IPV6", "VNI", "DEFAULT", "DEFAULT-DENY", "LABELS", "AGE",
    ]  # fmt: skip
    assert [r[:8] for r in rows(listed)] == [
        ["backend", "ready", backend.subnet4, backend.subnet6, str(backend.vni), "no", "yes", "tier=db"],
        ["v6only", "ready", "-", body["subnet6"], str(body["vni"]), "no", "no", "-"],
    ]
    as_json = json.loads(cli("network", "ls", "-o", "json").out)
    assert [(n["name"], n["subnet4"]) for n in as_json] == [("backend", backend.subnet4), ("v6only", None)]
    assert yaml.safe_load(cli("network", "ls", "-o", "yaml").out) == as_json

    # An app joins it; two replicas on one node have addresses in that node's range.
    app = app_services.app_deploy(
        tenant=world.a, name="web", spec={**SPEC, "networks": ["backend"]}, replicas=2, actor=world.users["staff"]
    )
    first, second = member(backend, app, edge, 0), member(backend, app, edge, 1)
    slot = backend.node_ranges.get()

    info = cli("network", "info", "backend")
    assert info.code == 0, info
    facts, ranges, members = info.out.split("\n\n")
    facts = fields_of(facts)
    assert facts["IPv4 prefix"] == backend.subnet4 and facts["IPv6 prefix"] == backend.subnet6
    assert facts["VNI"] == str(backend.vni)
    assert facts["Default"] == "no"
    assert facts["Default deny"] == "yes (ingress only where a network policy allows)"
    assert (facts["Labels"], facts["Apps"], facts["Tenant"]) == ("tier=db", "web", "tenant-a")
    headers = ["NODE", "IPV4 RANGE", "IPV4 GATEWAY", "IPV6 RANGE", "IPV6 GATEWAY"]
    assert [cell.strip() for cell in ranges.splitlines()[0].split("  ") if cell.strip()] == headers
    assert rows_of(ranges) == [["edge-1", slot.range4, slot.gateway4, slot.range6, slot.gateway6]]
    assert members.splitlines()[0].split() == ["CONTAINER", "APP", "NODE", "IPV4", "IPV6"]
    assert rows_of(members) == [
        ["web-0", "web", "edge-1", first.ipv4, first.ipv6],
        ["web-1", "web", "edge-1", second.ipv4, second.ipv6],
    ]
    detail = yaml.safe_load(cli("network", "info", "backend", "-o", "yaml").out)
    assert detail["apps"] == ["web"] and len(detail["members"]) == 2

    # The app's own info shows each replica's addresses, per network.
    app_info = cli("app", "info", "web")
    assert app_info.code == 0, app_info
    replicas = app_info.out.split("\n\n")[1].splitlines()
    assert replicas[0].split()[-2:] == ["CONTAINER", "ADDRESSES"]
    assert [line.split()[-1] for line in replicas[1:]] == [
        f"backend={first.ipv4},{first.ipv6}",
        f"backend={second.ipv4},{second.ipv6}",
    ]
    containers = json.loads(cli("app", "info", "web", "-o", "json").out)["containers"]
    assert [c["addresses"] for c in containers] == [
        [{"network": "backend", "ipv4": first.ipv4, "ipv6": first.ipv6}],
        [{"network": "backend", "ipv4": second.ipv4, "ipv6": second.ipv6}],
    ]

    # In use: refused, naming the app; nothing is deleted.
    in_use = cli("network", "rm", "backend", "--yes")
    assert in_use.code == 7, in_use
    assert one_error_line(in_use) == "network backend is used by app(s) web: move or delete them first"
    assert Network.objects.filter(name="backend").exists()

    empty = cli("network", "info", "v6only")
    assert empty.code == 0 and empty.err == "", empty
    assert empty.out.split("\n\n")[1:] == [
        "No node ranges: a node gets one when a member is placed on it.",
        "No members.\n",
    ]
    assert fields_of(empty.out.split("\n\n")[0])["IPv4 prefix"] == "-"

    mistyped = cli("network", "rm", "v6only", input="v6onyl\n")
    assert mistyped.code == 1, mistyped
    assert mistyped.err.splitlines()[-1] == "error: the name typed did not match; nothing was deleted"
    removed = cli("network", "rm", "v6only", input="v6only\n")
    assert removed.code == 0, removed
    assert removed.out == "Deleted network v6only from tenant tenant-a.\n"
    assert not Network.objects.filter(name="v6only").exists()
    gone = cli("network", "info", "v6only")
    assert gone.code == 6, gone
    assert one_error_line(gone) == "network v6only not found in tenant tenant-a"


def rows_of(table: str) -> list[list[str]]:
    return [line.split() for line in table.splitlines()[1:]]


def test_another_tenants_network_is_not_found_and_a_viewer_only_looks(cli, web_server, world):
    staff = world.users["staff"]
    services.network_create(tenant=world.b, name="secret-net", actor=staff)
    services.network_create(tenant=world.a, name="mine", actor=staff)
    login_as(cli, web_server, world, "viewer")

    listed = cli("network", "ls")
    assert listed.code == 0, listed
    assert [r[0] for r in rows(listed)] == ["mine"]
    assert "secret-net" not in cli("network", "ls", "-o", "json").out
    for args in (("info", "secret-net"), ("rm", "secret-net", "--yes")):
        result = cli("network", *args)
        assert result.code == 6, (args, result)
        assert one_error_line(result) == "network secret-net not found in tenant tenant-a"
    other = cli("network", "info", "secret-net", "--tenant", "tenant-b")
    assert other.code == 6, other
    assert "secret-net" not in other.err  # the tenant the viewer may not see is what is missing

    assert cli("network", "info", "mine").code == 0
    refused = cli("network", "create", "nope")
    assert refused.code == 5, refused
    refused_rm = cli("network", "rm", "mine", "--yes")
    assert refused_rm.code == 5, refused_rm
    assert set(Network.objects.filter(tenant=world.a).values_list("name", flat=True)) == {"mine"}
    pools = cli("ip-pool", "ls")
    assert pools.code == 5, pools
    assert one_error_line(pools) == "only platform staff may list or create IP pools"


def test_staff_list_create_and_remove_ip_pools(cli, web_server, world):
    services.network_create(tenant=world.a, name="backend", actor=world.users["staff"])  # the default pools
    login_as(cli, web_server, world, "staff")

    created = cli("ip-pool", "create", "edge-v4", "--cidr", "10.64.0.0/16", "--default-prefix", "26")
    assert created.code == 0, created
    assert created.out == "Created IP pool edge-v4: 10.64.0.0/16, networks get a /26.\n"
    listed = cli("ip-pool", "ls")
    assert listed.code == 0, listed
    assert listed.out.splitlines()[0].split() == [
        "NAME", "FAMILY", "PURPOSE", "CIDR", "NETWORK", "PREFIX", "DEFAULT", "NETWORKS", "CREATED",
    ]  # fmt: skip
    assert [r[:7] for r in rows(listed)] == [
        ["default-ipv4", "IPv4", "networks", ipam.DEFAULT_V4, "/24", "yes", "1"],
        ["edge-v4", "IPv4", "networks", "10.64.0.0/16", "/26", "no", "0"],
        ["default-ipv6", "IPv6", "networks", IPPool.objects.get(family=6).cidr, "/64", "yes", "1"],
    ]
    overlapping = cli("ip-pool", "create", "inner", "--cidr", "10.64.8.0/24")
    assert overlapping.code == 1, overlapping
    assert one_error_line(overlapping) == "cidr: 10.64.8.0/24 overlaps pool edge-v4 (10.64.0.0/16)"

    held = cli("ip-pool", "rm", "default-ipv4", "--yes")
    assert held.code == 7, held
    assert one_error_line(held) == "pool default-ipv4 holds the prefixes of 1 network(s)"
    assert cli("ip-pool", "rm", "edge-v4", "--yes").code == 0
    assert not IPPool.objects.filter(name="edge-v4").exists()
    missing = cli("ip-pool", "rm", "edge-v4", "--yes")
    assert missing.code == 6, missing
    assert one_error_line(missing) == "IP pool edge-v4 not found"


BAD_FLAGS = [
    (("network", "create", "Not_A_Label"), "error: NAME: expected a DNS label"),
    (("network", "create", "x", "--no-ipv4", "--no-ipv6"), "error: --no-ipv4 and --no-ipv6: a network needs"),
    (("network", "create", "x", "--no-ipv4", "--prefix4", "24"), "error: --prefix4: the network has no IPv4"),
    (("network", "create", "x", "--prefix4", "29"), "Invalid value for '--prefix4': 29 is not in the range"),
    (("network", "create", "x", "--prefix6", "NaN"), "Invalid value for '--prefix6': 'NaN' is not a valid"),
    (("network", "create", "x", "--label", "tier"), "Invalid value for '--label': expected KEY=VALUE"),
    (("network", "create", "x", "--label", "Bad Key=v"), "Invalid value for '--label': label key 'Bad Key'"),
    (("network", "create", "x", "--label", "k=\x1b[2J"), "Invalid value for '--label': label 'k': value"),
    (("network", "create", "x", "--bogus"), "No such option '--bogus'"),
    (("network", "rm"), "Missing argument 'NAME'"),
    (("ip-pool", "create", "p", "--cidr", "10.0.0.1/8"), "error: --cidr: expected a prefix such as"),
    (("ip-pool", "create", "p", "--cidr", "10.0.0.0/16", "--default-prefix", "8"), "error: --default-prefix:"),
    (("ip-pool", "create", "p"), "Missing option '--cidr'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_exit_2_naming_the_flag_before_anything_is_sent(cli, args, message):
    tenant = ("--tenant", "tenant-a") if args[0] == "network" else ()  # so no missing tenant is the usage error
    result = cli("--server", NOWHERE, "--token", "t", *args, *tenant)
    assert result.code == 2, result
    assert message in result.err, result
    assert "Traceback" not in result.err and "\x1b" not in result.err


HELP_PATHS = ["network", "network ls", "network create", "network info", "network rm", "ip-pool", "ip-pool ls",
              "ip-pool create", "ip-pool rm"]  # fmt: skip


@pytest.mark.parametrize("path", HELP_PATHS)
def test_every_network_command_has_help_with_examples(cli, path):
    result = cli(*path.split(), "--help")
    assert result.code == 0, result
    assert "\n  Examples:\n    hivemind " in result.out, result
    assert f"    hivemind {path.split()[0]} " in result.out, result


def test_app_deploy_joins_the_networks_named(cli, web_server, world, edge):
    services.network_create(tenant=world.a, name="backend", actor=world.users["staff"])
    login_as(cli, web_server, world, "staff")
    assert cli("context", "use", world.a.slug).code == 0
    bad = cli("app", "deploy", "--name", "api", "--image", "busybox", "--network", "Not_A_Name", "--no-wait")
    assert bad.code == 2 and "--network: expected a network name" in bad.err, bad
    missing = cli("app", "deploy", "--name", "api", "--image", "busybox", "--network", "nowhere", "--no-wait")
    assert missing.code == 1, missing
    assert one_error_line(missing) == "networks[0]: tenant tenant-a has no network named nowhere"
    deployed = cli(
        "app", "deploy", "--name", "api", "--image", "busybox", "--network", "backend", "--network", "default",
        "--port", "8080", "--no-wait",
    )  # fmt: skip
    assert deployed.code == 0, deployed
    app = App.objects.get(name="api")
    assert app.revision.spec["networks"] == ["backend", "default"]
    # app info says how the app is reached: its networks, virtual addresses and DNS names.
    shown = cli("app", "info", "api").out
    info = dict(re.findall(r"^(Networks|Virtual addresses|DNS names):\s+(.*)$", shown, re.MULTILINE))
    vip = app.service_address
    assert info["Networks"] == "backend, default"
    assert info["Virtual addresses"] == f"{vip.ipv4}, {vip.ipv6}"
    assert ipaddress.ip_address(vip.ipv4) in ipaddress.ip_network(ipam.DEFAULT_SERVICES_V4)
    assert info["DNS names"] == "api.tenant-a.hivemind., api"
