"""Reading a state document: parse, upgrade older versions, validate every field.

`load(document)` accepts the bytes of a stored document or the dict itself, upgrades it
through `upgrade_vN_to_vN+1` steps to the version this code writes, then checks it against
the schema below, naming the path of the first bad field (`apps[2].spec.image: ...`).

Writing a version 2 (docs/backup-state.md, "Versioning"): bump serialize.VERSION, change the
schema here to the new shape, add `upgrade_v1_to_v2(document) -> document` to UPGRADES, and
commit tests/backups/fixtures/state-v2.json; the fixture of every older version must keep
loading (tests/backups/test_state.py fails otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError

from backups.state.serialize import FORMAT, VERSION
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label

Check = Callable[[Any, str], None]
MAX_DOCUMENT_BYTES = 256 * 2**20


class StateError(ValueError):
    """A document that cannot be read; `path` names the bad field ("" for the whole document)."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(f"{path or 'document'}: {message}")


# -- upgrades ---------------------------------------------------------------------------
# UPGRADES[n] turns a version n document into a version n+1 one (n+1 <= VERSION). Each step
# is a plain function of the dict, written once and never changed afterwards.
def upgrade_v1_to_v2(document: dict) -> dict:
    """Version 2 adds each tenant's `backup_policies`: a version 1 document had none in it."""
    bodies = document.get("tenants") if document.get("kind") == "platform" else [document]
    for body in bodies if isinstance(bodies, list) else []:
        if isinstance(body, dict):
            body.setdefault("backup_policies", [])
    return document


UPGRADES: dict[int, Callable[[dict], dict]] = {1: upgrade_v1_to_v2}


def upgrade(document: dict, *, to: int = VERSION, steps: dict[int, Callable[[dict], dict]] | None = None) -> dict:
    """Apply the steps from the document's version up to `to`, one version at a time."""
    steps = UPGRADES if steps is None else steps
    version = document["version"]
    while version < to:
        step = steps.get(version)
        if step is None:
            raise StateError("version", f"no upgrade from version {version} to {version + 1}")
        document = step(dict(document))
        version += 1
        document["version"] = version
    return document


# -- checks -----------------------------------------------------------------------------
def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def text(*, blank: bool = True, max_length: int = 10_000) -> Check:
    def check(value, path):
        if not isinstance(value, str):
            raise StateError(path, f"expected text, got {type(value).__name__}")
        if not blank and not value:
            raise StateError(path, "must not be empty")
        if len(value) > max_length:
            raise StateError(path, f"at most {max_length} characters, got {len(value)}")

    return check


def label(value, path) -> None:
    if not is_dns_label(value):
        raise StateError(path, f"expected {DNS_LABEL_RULE}, got {str(value)[:70]!r}")


def integer(*, low: int = 0, high: int | None = None) -> Check:
    def check(value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            raise StateError(path, f"expected a whole number, got {type(value).__name__}")
        if value < low or (high is not None and value > high):
            raise StateError(path, f"expected {low} to {high if high is not None else 'more'}, got {value}")

    return check


def number(value, path) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateError(path, f"expected a number, got {type(value).__name__}")


def boolean(value, path) -> None:
    if not isinstance(value, bool):
        raise StateError(path, f"expected true or false, got {type(value).__name__}")


def choice(*values: str) -> Check:
    def check(value, path):
        if value not in values:
            raise StateError(path, f"expected one of {', '.join(map(str, values))}, got {str(value)[:70]!r}")

    return check


def instant(value, path) -> None:
    if not isinstance(value, str):
        raise StateError(path, "expected an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise StateError(path, f"expected an ISO 8601 time, got {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise StateError(path, f"a time needs its zone (e.g. Z), got {value[:40]!r}")


def nullable(inner: Check) -> Check:
    def check(value, path):
        if value is not None:
            inner(value, path)

    return check


def anything(value, path) -> None:
    """Any JSON value (a spec area this schema leaves to the area's own validation)."""


def mapping(values: Check = anything) -> Check:
    def check(value, path):
        if not isinstance(value, dict):
            raise StateError(path, f"expected an object, got {type(value).__name__}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateError(path, "keys must be text")
            values(item, _at(path, key))

    return check


def listing(item: Check = anything) -> Check:
    def check(value, path):
        if not isinstance(value, list):
            raise StateError(path, f"expected a list, got {type(value).__name__}")
        for index, element in enumerate(value):
            item(element, f"{path}[{index}]")

    return check


def obj(fields: dict[str, Check]) -> Check:
    """An object with exactly these fields (a missing or unknown one is an error)."""

    def check(value, path):
        if not isinstance(value, dict):
            raise StateError(path, f"expected an object, got {type(value).__name__}")
        for name, field in fields.items():
            if name not in value:
                raise StateError(_at(path, name), "missing")
            field(value[name], _at(path, name))
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise StateError(_at(path, unknown[0]), f"unknown field (known: {', '.join(fields)})")

    return check


def objects(fields: dict[str, Check], *, key: str | None = "name") -> Check:
    """A list of objects, unique by `key`."""
    item = obj(fields)

    def check(value, path):
        listing(item)(value, path)
        seen: set = set()
        for index, element in enumerate(value):
            if key is not None:
                if element[key] in seen:
                    raise StateError(f"{path}[{index}].{key}", f"{element[key]} appears twice")
                seen.add(element[key])

    return check


def _from_validation(path: str, exc: ValidationError) -> StateError:
    """An area validator's ValidationError({field: [message]}) as a StateError under `path`."""
    if hasattr(exc, "message_dict"):
        (field, messages), *_ = exc.message_dict.items()
        inner = "" if field in ("spec", "__all__") else field
        return StateError(f"{path}.{inner}" if inner else path, messages[0])
    return StateError(path, exc.messages[0])


def app_spec(value, path) -> None:
    """An app's stored spec: the fields the restore reads names from are checked here; the
    rest is checked again by the app services when the restore deploys it."""
    from hivemind.applications.spec import SPEC_FIELDS, clean_image
    from storage.mounts import clean_volumes

    mapping()(value, path)
    unknown = sorted(set(value) - SPEC_FIELDS)
    if unknown:
        raise StateError(_at(path, unknown[0]), "unknown spec field")
    try:
        clean_image(value.get("image"))
        clean_volumes(value.get("volumes"))
    except ValidationError as exc:
        raise _from_validation(path, exc) from None
    listing(label)(value.get("networks") or [], _at(path, "networks"))
    listing(mapping())(value.get("volume_templates") or [], _at(path, "volume_templates"))


def policy_spec(value, path) -> None:
    from networking.policies import clean_policy

    try:
        clean_policy(value)
    except ValidationError as exc:
        raise _from_validation(path, exc) from None


strings = mapping(text(max_length=4096))
ROLES = ("owner", "admin", "operator", "viewer")
family = nullable(
    obj({"subnet": text(blank=False, max_length=64), "prefix": integer(high=128), "pool": nullable(label)})
)
REVISION = {
    "number": integer(low=1),
    "spec": app_spec,
    "change": text(max_length=200),
    "created_at": instant,
    "created_by": nullable(text()),
}

TENANT_BODY = {
    "tenant": obj(
        {
            "slug": label,
            "name": text(blank=False, max_length=100),
            "description": text(),
            "isolation_level": choice("hard", "soft", "network-only"),
            "status": choice("active", "suspended", "terminating"),
            "labels": mapping(),
        }
    ),
    "quota": nullable(mapping(nullable(integer()))),
    "members": objects({"username": text(blank=False, max_length=150), "role": choice(*ROLES)}, key="username"),
    "service_accounts": objects({"name": label, "description": text(), "role": nullable(choice(*ROLES))}),
    "networks": objects(
        {
            "name": label,
            "is_default": boolean,
            "default_deny": boolean,
            "labels": strings,
            "ipv4": family,
            "ipv6": family,
        }
    ),
    "network_policies": objects({"name": label, "spec": policy_spec}),
    "volumes": objects(
        {
            "name": label,
            "size_bytes": integer(low=1),
            "pool": label,
            "access_mode": choice("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"),
            "encrypted": boolean,
            "labels": strings,
            "snapshot_schedule": nullable(obj({"every": integer(low=60), "keep": integer(low=1), "enabled": boolean})),
            "replica": nullable(obj({"pool": label, "every": nullable(integer(low=1))})),
        }
    ),
    "apps": objects(
        {
            "name": label,
            "service_name": text(max_length=63),
            "replicas": integer(),
            "revision": nullable(integer(low=1)),
            "spec": nullable(app_spec),
            "revisions": objects(REVISION, key="number"),
        }
    ),
    "notifiers": objects(
        {
            "name": label,
            "kind": choice("webhook", "email", "slack", "alertmanager"),
            "config": mapping(),
            "secrets_to_reenter": listing(text(blank=False, max_length=100)),
        }
    ),
    "alert_rules": objects(
        {
            "name": label,
            "kind": choice("metric", "event", "anomaly"),
            "platform": boolean,
            "metric": text(),
            "matchers": listing(mapping()),
            "aggregation": text(),
            "window_seconds": integer(),
            "by": listing(text()),
            "comparison": choice(">", ">=", "<", "<=", "==", "!="),
            "threshold": number,
            "event": text(),
            "for_seconds": integer(),
            "severity": choice("critical", "warning", "info"),
            "labels": strings,
            "annotations": strings,
            "group_by": listing(text()),
            "repeat_interval_seconds": integer(),
            "enabled": boolean,
            "notifiers": listing(label),
        }
    ),
    "silences": objects(
        {
            "matchers": listing(mapping()),
            "starts_at": instant,
            "ends_at": instant,
            "comment": text(max_length=500),
            "created_by": nullable(text()),
        },
        key=None,
    ),
    "backup_policies": objects(
        {
            "name": label,
            "location": label,
            "scope": choice("tenant", "apps", "volumes"),
            "names": listing(label),
            "schedule": text(max_length=100),
            **{f"keep_{unit}": integer() for unit in ("last", "hourly", "daily", "weekly", "monthly")},
            "verify_schedule": text(max_length=100),
            "verify_read_percent": integer(high=100),
            "enabled": boolean,
        }
    ),
}
ENVELOPE = {"format": anything, "version": anything, "created": instant, "kind": choice("tenant", "platform")}
PLATFORM = {
    "nodes": objects(
        {
            "name": label,
            "address": text(max_length=255),
            "labels": strings,
            "taints": listing(mapping()),
            "schedulable": boolean,
        }
    ),
    "storage_pools": objects(
        {
            "name": label,
            "provider": text(blank=False, max_length=32),
            "node": label,
            "path": text(blank=False),
            "options": mapping(),
            "is_default": boolean,
            "secrets_to_reenter": listing(text()),
        }
    ),
    "ip_pools": objects(
        {
            "name": label,
            "family": choice(4, 6),
            "purpose": choice("networks", "services"),
            "cidr": text(blank=False, max_length=64),
            "default_prefix": integer(high=128),
            "is_default": boolean,
        }
    ),
    "users": objects(
        {
            "username": text(blank=False, max_length=150),
            "email": text(),
            "first_name": text(),
            "last_name": text(),
            "is_active": boolean,
            "is_staff": boolean,
            "is_superuser": boolean,
        },
        key="username",
    ),
}


def _tenants(value, path) -> None:
    listing(obj(TENANT_BODY))(value, path)
    seen = set()
    for index, body in enumerate(value):
        slug = body["tenant"]["slug"]
        if slug in seen:
            raise StateError(f"{path}[{index}].tenant.slug", f"{slug} appears twice")
        seen.add(slug)


def _revisions_agree(body: dict, path: str) -> None:
    """An app's current revision must be among its revisions."""
    for index, app in enumerate(body["apps"]):
        at = f"{path}apps[{index}]"
        numbers = {r["number"] for r in app["revisions"]}
        if app["revision"] is not None and app["revision"] not in numbers:
            raise StateError(f"{at}.revision", f"revision {app['revision']} is not among the app's revisions")


def validate(document: dict) -> None:
    """Check a current-version document; StateError names the first bad field."""
    if document.get("kind") == "platform":
        obj({**ENVELOPE, **PLATFORM, "tenants": _tenants})(document, "")
        for index, body in enumerate(document["tenants"]):
            _revisions_agree(body, f"tenants[{index}].")
    else:
        obj({**ENVELOPE, **TENANT_BODY})(document, "")
        _revisions_agree(document, "")


def load(document: bytes | str | dict) -> dict:
    """A stored document as a checked dict of the current version (older ones upgraded)."""
    if isinstance(document, bytes | str):
        if len(document) > MAX_DOCUMENT_BYTES:
            raise StateError("", f"is {len(document)} bytes; at most {MAX_DOCUMENT_BYTES}")
        try:
            document = json.loads(document)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateError("", f"not JSON: {exc}") from None
        except RecursionError:
            raise StateError("", "nested too deeply to be a state document") from None
    if not isinstance(document, dict):
        raise StateError("", f"expected a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT:
        raise StateError("format", f"expected {FORMAT!r}, got {str(document.get('format'))[:70]!r}")
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StateError("version", f"expected a whole number from 1, got {str(version)[:40]!r}")
    if version > VERSION:
        raise StateError(
            "version", f"version {version} was written by a newer Hivemind; this one reads versions 1 to {VERSION}"
        )
    try:
        document = upgrade(json.loads(json.dumps(document)))  # a copy: the caller's dict is left as it was
        validate(document)
    except RecursionError:
        raise StateError("", "nested too deeply to be a state document") from None
    return document
