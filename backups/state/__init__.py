"""The state serializer of backups: a tenant's or the platform's restorable configuration as a
versioned JSON document (docs/backup-state.md), its reader and the restore's dry run.

- `tenant_state(tenant)`, `platform_state()`: the documents (serialize.py);
- `dumps(document)`: their canonical bytes;
- `load(document)`: parse, upgrade an older version, validate (schema.py);
- `plan(document, into_tenant=..., rename=..., conflicts=...)`: what a restore would do (plan.py).
"""

from backups.state.plan import plan
from backups.state.schema import StateError, load
from backups.state.serialize import FORMAT, VERSION, dumps, platform_state, tenant_state

__all__ = ["FORMAT", "VERSION", "StateError", "dumps", "load", "plan", "platform_state", "tenant_state"]
