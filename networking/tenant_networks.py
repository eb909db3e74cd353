"""Each tenant's own Docker network on each node, and the rule that keeps tenants apart.

A tenant's containers on a node join the bridge `hm<tenant id>x<node>` (Docker network
`hivemind-t<tenant id>`). Docker's own isolation between bridges exists only when it
manages iptables; Hivemind does not rely on it: the agent keeps one rule per tenant
bridge in its own chain, HIVEMIND-ISOLATION, jumped to from FORWARD:

    -i hm<id>x<node> -o hm<id>x<node> -j ACCEPT   (the tenant's containers reach each other)
    -i hm<id>x<node> -o hm+           -j DROP     (and no other tenant's bridge)

Same-tenant traffic is accepted by Hivemind's own rule, so it flows whatever the host's
FORWARD policy is (a Docker daemon that manages iptables sets it to DROP). Everything
else (the outside world, published ports) is left to Docker.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess

import docker

log = logging.getLogger(__name__)

CHAIN = "HIVEMIND-ISOLATION"
BRIDGE_PREFIX = "hm"
LABEL = "io.hivemind.tenant"


def network_name(tenant_id: int) -> str:
    return f"hivemind-t{tenant_id}"


def bridge_name(tenant_id: int, node: str | None = None) -> str:
    """`hm<tenant id>x<4 hex digits of the node name>`: unique on a host even when several
    nodes share it (as in the multi-node tests), at most 15 characters as Linux wants."""
    from django.conf import settings

    digest = hashlib.sha256((node or settings.NODE_NAME).encode()).hexdigest()[:4]
    return f"{BRIDGE_PREFIX}{tenant_id}x{digest}"


def ensure_network(client: docker.DockerClient, tenant_id: int) -> str:
    """The tenant's network on this node, created if missing (idempotent); returns its name.
    Its subnet comes from the daemon's address pools (dockerd --default-address-pool)."""
    name = network_name(tenant_id)
    found = client.networks.list(names=[name])
    if not any(n.name == name for n in found):
        try:
            client.networks.create(
                name,
                driver="bridge",
                labels={LABEL: str(tenant_id), "io.hivemind.managed": "true"},
                options={"com.docker.network.bridge.name": bridge_name(tenant_id)},
            )
        except docker.errors.APIError as exc:
            if "already exists" not in str(exc):
                raise
    ensure_isolation(tenant_id)
    return name


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    binary = shutil.which("iptables")
    if binary is None:
        raise RuntimeError("iptables is not installed; tenant networks cannot be isolated on this node")
    return subprocess.run([binary, "-w", *args], capture_output=True, text=True, check=check)


def _rules(bridge: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(allow, deny) for one tenant bridge."""
    allow = ("-i", bridge, "-o", bridge, "-j", "ACCEPT")
    deny = ("-i", bridge, "-o", f"{BRIDGE_PREFIX}+", "-j", "DROP")
    return allow, deny


def _legacy_allow(bridge: str) -> tuple[str, ...]:
    """The allow rule of earlier releases: RETURN left same-tenant traffic to FORWARD's policy."""
    return ("-i", bridge, "-o", bridge, "-j", "RETURN")


def _delete_all(rule: tuple[str, ...]) -> None:
    while _iptables("-C", CHAIN, *rule, check=False).returncode == 0:
        _iptables("-D", CHAIN, *rule)


def ensure_isolation(tenant_id: int) -> None:
    """Add this tenant's two rules to HIVEMIND-ISOLATION (and the chain to FORWARD) once."""
    if _iptables("-n", "-L", CHAIN, check=False).returncode != 0:
        _iptables("-N", CHAIN, check=False)  # another agent may have made it meanwhile
    if _iptables("-C", "FORWARD", "-j", CHAIN, check=False).returncode != 0:
        _iptables("-I", "FORWARD", "1", "-j", CHAIN)
    bridge = bridge_name(tenant_id)
    allow, deny = _rules(bridge)
    if _iptables("-C", CHAIN, *allow, check=False).returncode != 0:
        _iptables("-I", CHAIN, "1", *allow)  # at the top: always before this tenant's DROP
    if _iptables("-C", CHAIN, *deny, check=False).returncode != 0:
        _iptables("-A", CHAIN, *deny)
    _delete_all(_legacy_allow(bridge))


def remove_network(client: docker.DockerClient, tenant_id: int, node: str | None = None) -> None:
    """Remove the tenant's network and its rules from a node (when nothing uses them)."""
    for network in client.networks.list(names=[network_name(tenant_id)]):
        network.remove()
    bridge = bridge_name(tenant_id, node)
    for rule in (*_rules(bridge), _legacy_allow(bridge)):
        _delete_all(rule)
