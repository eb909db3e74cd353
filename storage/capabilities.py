"""What a node can do with shared pools, reported by its agent as node labels and used by the
scheduler: a replica mounting a volume of a shared pool (RBD) goes only to a node that can
attach it, and the scheduler's explanation names the label when none can.

    storage.hivemind.io/rbd       "yes" or "no"
    storage.hivemind.io/rbd-path  how it attaches ("fuse": rbd-fuse + loop), or "none"
    storage.hivemind.io/nfs       "yes" or "no"
    storage.hivemind.io/nfs-path  "kernel" (the kernel's NFS client), or "none"
"""

from __future__ import annotations

PREFIX = "storage.hivemind.io/"


def label(provider: str) -> str:
    return f"{PREFIX}{provider}"


def node_labels() -> dict[str, str]:
    """This node's storage labels, probed now (tools and devices present)."""
    from storage.providers import registry

    labels = {}
    for name in registry.names():
        provider = registry.get(name)
        if not provider.capabilities.shared:
            continue
        path = provider.node_support()
        labels[label(name)] = "yes" if path else "no"
        labels[f"{label(name)}-path"] = path or "none"
    return labels


def required(pools) -> dict[str, str]:
    """The node labels a replica needs to attach volumes of these pools."""
    return {label(pool.provider): "yes" for pool in pools if pool.capabilities.shared}
