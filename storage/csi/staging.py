"""The volumes the CSI endpoint has staged on this node, recorded under <var dir>/csi/staged/:
the agent's passes (storage/node.py keep_attachments, storage/crypt.py reconcile) keep their
attachments and views while a CO holds them, as they do for a container's. No gRPC here: the
agent reads this and must not load the CSI server's libraries."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings


def staged_dir() -> Path:
    return Path(settings.VAR_DIR) / "csi" / "staged"


def staged() -> dict[str, list[str]]:
    """Handles of the volumes staged on this node -> ["csi"] (the shape of crypt.bound_under)."""
    try:
        return {entry.name: ["csi"] for entry in staged_dir().iterdir() if not entry.name.startswith(".")}
    except FileNotFoundError:
        return {}


def record(handle: str, staging: str | None) -> None:
    """Note the volume staged at `staging`, or (None) no longer staged."""
    path = staged_dir() / handle
    if staging is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{handle}.tmp")
    tmp.write_text(json.dumps({"staging_target_path": staging}))
    tmp.replace(path)
