"""A notifier's secrets at rest: sealed with a data key of its own under the tenant's keys
(tenants/sealing.py); never returned."""

from __future__ import annotations

from tenants.sealing import Sealer

PURPOSE = "notifier"
_sealer = Sealer(purpose=PURPOSE, label="hivemind/notifier-secrets", what="notifier")
seal = _sealer.seal
unseal = _sealer.unseal
forget = _sealer.forget
