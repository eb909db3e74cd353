"""The node's nftables table, compiled from the database (networking/nft.py does the compiling
and the atomic apply): the networks this node holds and, as they are added, the policies and
services that concern its members. Applied when it changed, and again when the table in the
kernel no longer matches what was applied (a rule deleted by hand comes back next pass)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from networking import nft
from networking.models import NodeRange
from networking.overlay import bridge_name

log = logging.getLogger(__name__)
TABLE = "hivemind"


def node_segments(node) -> list[nft.NetSegment]:
    rows = NodeRange.objects.filter(node=node).select_related("network").order_by("network_id")
    return [
        nft.NetSegment(
            network_id=row.network_id,
            tenant_id=row.network.tenant_id,
            bridge=bridge_name(row.network_id, node.name),
            subnet4=row.network.subnet4 or None,
            subnet6=row.network.subnet6 or None,
            default_deny=row.network.default_deny,
        )
        for row in rows
    ]


def compile_for(node, services=None) -> nft.Table:
    """The node's table: its networks, every policy resolved to today's addresses, every
    app's virtual addresses with their healthy replicas (any node)."""
    from networking import discovery
    from networking.models import IPPool, NetworkPolicy
    from networking.policies import resolve

    segments = node_segments(node)
    if not segments:
        return nft.compile_table([], [], nft.Isolation(), [], table=TABLE)
    policy_rules, isolation = resolve(NetworkPolicy.objects.all())
    if services is None:
        services = discovery.read().services
    pools = IPPool.objects.filter(purpose=IPPool.Purpose.NETWORKS).order_by("cidr")
    internal = list(pools.values_list("cidr", flat=True))  # never masqueraded to; the transit's sources
    return nft.compile_table(segments, policy_rules, isolation, services, table=TABLE, internal=internal)


@dataclass
class Applied:
    """What was last loaded on a node: the table, and a digest of the kernel's listing right
    after a whole load (None after an update in place: unknown until the next whole load)."""

    table: nft.Table
    listing: str | None


_applied: dict[str, Applied] = {}  # node name -> what was applied last


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apply_node_rules(networking, *, force: bool = False, services=None) -> bool:
    """Bring the node's table to what the database says; True when something was loaded.

    A change of services' backends only (a replica turned healthy or went away) is loaded in
    place, a few lines in one transaction (nft.update_script); any other change loads the whole
    table. `force` (the reconcile pass) also checks the kernel's table for drift (a rule deleted
    by hand) and loads the whole table when it differs from the last whole load, or when an
    update in place came since (its listing was not read back: reading a big table costs
    about as much as loading it, too much for the load balancer's every-second path)."""
    node, netns = networking.node, networking.netns
    table = compile_for(node, services)
    last = _applied.get(node.name)
    if last is not None and last.table.skeleton == table.skeleton:
        same = last.table.script == table.script
        if not force:
            if same:
                return False
            nft.apply(nft.update_script(table, last.table), netns=netns)
            _applied[node.name] = Applied(table=table, listing=None)
            return True
        if same and last.listing is not None:
            if _digest(nft.listing(table=TABLE, netns=netns)) == last.listing:
                return False
            log.warning("node %s: its nftables table %s differs from what was applied: repairing it", node.name, TABLE)
    nft.ensure_kernel_settings(netns=netns)
    nft.apply(table.script, netns=netns)
    _applied[node.name] = Applied(table=table, listing=_digest(nft.listing(table=TABLE, netns=netns)))
    return True


def forget(node_name: str) -> None:
    """Forget what was applied on a node (its table was removed): the next pass applies again."""
    _applied.pop(node_name, None)
