"""A backup location's credentials at rest: sealed with a data key of its own under the
tenant's keys (tenants/sealing.py); never returned by the API, the CLI or the admin."""

from __future__ import annotations

from tenants.sealing import Sealer

PURPOSE = "backup-location"
_sealer = Sealer(purpose=PURPOSE, label="hivemind/backup-location-secrets", what="backup location")
seal = _sealer.seal
unseal = _sealer.unseal
forget = _sealer.forget
