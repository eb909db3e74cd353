"""A storage pool's secrets at rest (an RBD pool's cephx key): sealed with a key derived from
the platform's master key (tenants/sealing.py); never returned by the API, the CLI or the
admin, unsealed only where the pool's provider runs (storage/steps.py `provider_of`)."""

from __future__ import annotations

from tenants.sealing import Sealer

_sealer = Sealer(purpose="storage-pool", label="hivemind/storage-pool-secrets", what="storage pool")
seal = _sealer.seal
unseal = _sealer.unseal
