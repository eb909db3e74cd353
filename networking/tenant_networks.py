"""The per-tenant bridges of earlier releases, kept only to remove them (docs/networking.md,
"Upgrading from per-tenant bridges").

A tenant's containers on a node joined the bridge `hm<tenant id>x<node>` (Docker network
`hivemind-t<tenant id>`), kept apart by two rules per bridge in the iptables chain
HIVEMIND-ISOLATION. Networks are IPAM's now (networking/node.py); a node removes an old
bridge and its rules once no container uses it.
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


def remove_network(client: docker.DockerClient, tenant_id: int, node: str | None = None) -> None:
    """Remove the tenant's network and its rules from a node (when nothing uses them)."""
    for network in client.networks.list(names=[network_name(tenant_id)]):
        network.remove()
    bridge = bridge_name(tenant_id, node)
    for rule in (*_rules(bridge), _legacy_allow(bridge)):
        _delete_all(rule)
