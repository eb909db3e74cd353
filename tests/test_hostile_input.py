"""Hostile input at every write operation and every list filter of the API (issue 12).

Driven from the OpenAPI schema, so a new endpoint is covered as soon as it exists: every
POST/PUT/PATCH operation needs a base payload in BASE (the test fails naming one that has
none) and every list operation's query parameters get hostile values too. One field at a
time (nested spec fields included) is replaced by NaN and Infinity in every spelling, huge
and negative numbers, empty strings, control characters and NUL, very long strings, wrong
JSON types and an unknown field. Then, as staff and as a tenant operator:

- never a 5xx;
- never a 2xx for a value the field's documented grammar refuses (docs/limits.md);
- every 400 names its field (a key of the error body, or `detail` for a body that is not JSON);
- nothing in the database changed (rows and values of every model a write touches), and
  no container appeared on the suite's Docker daemon.

The fixed table of hostile values is thrown exhaustively; hypothesis adds generated values
(any control character, any huge number, non-finite floats) with a bounded, derandomized
number of examples, so a run is reproducible (about three minutes on two busy cores).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting import services as alert_services
from alerting.models import Alert, AlertRule, Silence
from backups import services as backup_services
from backups.export import export_keys, export_platform_keys
from backups.keys import open_for
from backups.models import Backup, BackupLocation, BackupPolicy, Restore
from backups.state import dumps, tenant_state
from hivemind.applications import services as app_services
from hivemind.applications.models import App, AppRevision
from hivemind.applications.spec import IMAGE
from hivemind.core import limits
from hivemind.core.units import QuantityError, parse_bytes, parse_count, parse_cpu, parse_duration
from hivemind.nodes.models import Node
from hivemind.workflows.models import Step, Workflow
from networking import services as network_services
from networking.models import IPPool, Network, NetworkPolicy
from notifiers import services as notifier_services
from notifiers.models import Notifier
from storage import services as storage_services
from storage.models import Snapshot, StoragePool, Volume, VolumeReplica
from tenants.models import ApiToken, Membership, QuotaReservation, ServiceAccount, Tenant, TenantQuota, TenantUsage

pytestmark = pytest.mark.django_db
GENERATED_EXAMPLES = 12  # per operation and caller, on top of the exhaustive fixed table
PASSWORD = "hostile-input-Passw0rd!"
UNKNOWN = object()  # marks "add an unknown field" instead of replacing one

# --- hostile values ---------------------------------------------------------------------------

NON_JSON = ("float nan", "float inf", "float -inf")  # not JSON at all: the body is refused as a whole
HOSTILE: list[tuple[str, object]] = [
    ("float nan", float("nan")),
    ("float inf", float("inf")),
    ("float -inf", float("-inf")),
    *((f"{s!r}", s) for s in ("NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "+inf", "∞", "1e30")),
    ("huge int", 10**30),
    ("2**63", 2**63),
    ("negative", -1),
    ("negative float", -0.5),
    ("huge float", 1e308),
    ("'9'*30", "9" * 30),
    ("'-1'", "-1"),
    ("empty", ""),
    ("blank", "   "),
    ("NUL", "a\x00b"),
    ("SOH", "a\x01b"),
    ("ESC", "\x1b[31mred"),
    ("DEL", "a\x7f"),
    ("newline", "line\nbreak"),
    ("100 KiB", "x" * (100 * 1024)),
    ("2 MiB", "x" * (2 * 1024 * 1024)),
    ("list", [1, 2]),
    ("object", {"nested": {"deep": 1}}),
    ("true", True),
    ("false", False),
    ("null", None),
]

generated_values = st.one_of(
    st.integers(min_value=2**31),
    st.integers(max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not math.isfinite(f) or abs(f) > 1e12),
    st.builds(
        lambda head, bad, tail: head + bad + tail,
        st.text("abc", max_size=3),
        st.sampled_from([chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), 127]]),
        st.text("xyz", max_size=3),
    ),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf", "1e999", "-0", "0x10", "1_000"]),
)


# --- what each field accepts -------------------------------------------------------------------
# A kind answers "must this value be refused?" from the field's documented grammar. True means
# a 2xx is a bug; False means the value is legal (a long description, "-1" as an env value),
# so the API may accept it — it must still not answer 5xx.


def _text_of(value) -> str | None:
    """The text DRF's CharField reads (JSON numbers as their decimal text), or None for other types."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, str) else str(value)


def text(max_length=limits.MAX_FREE_TEXT, *, blank=False, pattern=None, multiline=False, null=False, strict=False):
    """Free text (JSON numbers read as their text, as DRF does, unless `strict`)."""

    def refuse(value) -> bool:
        if value is None:
            return not null
        if strict and not isinstance(value, str):
            return True
        content = _text_of(value)
        if content is None:
            return True
        stripped = content if multiline else content.strip()
        if not stripped and not blank:
            return True
        if len(content) > max_length or limits.control_character(content, multiline=multiline):
            return True
        return bool(pattern and stripped) and not re.fullmatch(pattern, stripped)

    return refuse


def one_of(*choices: str) -> Callable[[object], bool]:
    return lambda value: value not in choices


def integer(low: int, high: int, *, null=False) -> Callable[[object], bool]:
    """DRF's IntegerField: an int, or text/float that is a whole number."""

    def refuse(value) -> bool:
        if value is None:
            return not null
        if isinstance(value, bool | list | dict):
            return True
        try:
            number = int(re.sub(r"\.0*\s*$", "", str(value)))
        except ValueError:
            return True
        return not low <= number <= high

    return refuse


def quantity(parse: Callable, *, null=False, **bounds) -> Callable[[object], bool]:
    """A quantity in the grammar of core/units.py (the documented one)."""

    def refuse(value) -> bool:
        if value is None:
            return not null
        try:
            parse(value, **bounds)
        except QuantityError:
            return True
        return False

    return refuse


def never(value) -> bool:  # a name that must exist (a tenant slug, a user) or a fixed field: nothing hostile is one
    return True


def env_value(value) -> bool:
    content = _text_of(value)
    return (
        content is None
        or len(content) > limits.MAX_ENV_VALUE
        or bool(limits.control_character(content, multiline=True))
    )


def command(value) -> bool:
    if value is None:
        return False  # the image's command
    if not isinstance(value, str):
        return not (isinstance(value, list) and all(isinstance(v, str) for v in value))
    return len(value) > limits.MAX_COMMAND_LENGTH or bool(limits.control_character(value))


def password(value) -> bool:
    """Django's validators: at least 8 characters, not all digits (nor common, nor like the user name)."""
    content = _text_of(value)
    return text(limits.MAX_PASSWORD, multiline=True)(value) or len(content) < 8 or content.isdigit()


def bool_field(value) -> bool:
    return value not in (True, False, "true", "false", "True", "False", 1, 0, "1", "0", "yes", "no", "on", "off")


SLUG = r"[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?"
DNS_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
LABEL_VALUE = r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?"


def spec() -> dict:
    return {
        "image": "hivemind/busybox:latest",
        "command": "httpd -f -p 8080",
        "env": {"MODE": "prod"},
        "ports": [{"container_port": 8080, "protocol": "tcp"}],
        "resources": {"cpu": "100m", "memory": "16Mi", "cpu_limit": "1", "memory_limit": "64Mi"},
        "health": {"type": "tcp", "port": 8080, "interval": 5},
        "update": {"max_surge": 1, "max_unavailable": 0},
        "placement": {"node_selector": {"zone": "eu-1"}},
    }


SPEC_FIELDS = {
    "spec": never,  # any hostile value in place of the whole spec
    "spec.image": lambda v: not (isinstance(v, str) and len(v.strip()) <= 255 and IMAGE.match(v.strip())),
    "spec.command": command,
    "spec.env": lambda v: v is not None,
    "spec.env.MODE": env_value,
    "spec.ports": lambda v: v is not None,
    "spec.ports[0].container_port": integer(1, 65535),
    "spec.ports[0].protocol": lambda v: v not in (None, "", "tcp", "udp", "TCP", "UDP"),
    "spec.resources": lambda v: v not in (None, {}),
    "spec.resources.cpu": lambda v: quantity(parse_cpu, null=True)(v) or (v is not None and parse_cpu(v) > 1000),
    "spec.resources.memory": lambda v: (
        quantity(parse_bytes, null=True)(v) or (v is not None and parse_bytes(v) > 64 * 2**20)
    ),  # above its limit
    "spec.resources.cpu_limit": lambda v: quantity(parse_cpu, null=True)(v) or (v is not None and parse_cpu(v) < 100),
    "spec.resources.memory_limit": lambda v: (
        quantity(parse_bytes, null=True)(v) or (v is not None and parse_bytes(v) < 16 * 2**20)
    ),
    "spec.health.port": integer(1, 65535),
    "spec.health.interval": quantity(parse_duration, null=True, low=0.5, high=3600),
    "spec.update.max_surge": integer(1, 100, null=True),
    "spec.update.max_unavailable": integer(0, 100, null=True),
    "spec.placement.node_selector.zone": text(63, blank=True, strict=True, pattern=LABEL_VALUE),
    "spec.hostile_unknown_field": never,  # an unknown field inside the spec, whatever its value
    "spec.resources.hostile_unknown_field": never,
    "spec.restart": lambda v: v not in (None, "always", "on-failure", "unless-stopped", "no"),
}
QUOTA = {"cpu": "4", "memory": "8Gi", "containers": "10", "apps": "5", "volumes": "5", "storage": "10Gi"}
QUOTA_FIELDS = {
    "cpu": quantity(parse_cpu, null=True),
    "memory": quantity(parse_bytes, null=True),
    "containers": quantity(parse_count, null=True),
    "apps": quantity(parse_count, null=True),
    "volumes": quantity(parse_count, null=True),
    "storage": quantity(parse_bytes, null=True),
}
TENANT_FIELDS = {
    "name": text(100),
    "slug": never,  # the slug cannot change
    "description": text(blank=True, multiline=True),
    "isolation_level": one_of("hard", "soft", "network-only"),
    "labels": lambda v: v not in ({},),
    "labels.team": text(200, blank=True, strict=True),
}


def policy_spec() -> dict:
    return {
        "apps": ["target"],
        "ingress": [{"from": [{"app": "api"}, {"cidr": "192.0.2.0/24"}], "ports": [{"protocol": "tcp", "port": 80}]}],
        "egress": [],
    }


def cidr(*, strict: bool) -> Callable[[object], bool]:
    """A prefix in text (IPAM's: no host bits, spaces around ignored; a policy's: any address/length)."""
    import ipaddress

    def refuse(value) -> bool:
        if not isinstance(value, str):
            return True
        try:
            ipaddress.ip_network(value.strip() if strict else value, strict=strict)
        except ValueError:
            return True
        return False

    return refuse


NETWORK_LABELS = {
    "labels": lambda v: v not in (None, "", "   "),  # an object replaced by anything else (text is k=v pairs)
    "labels.tier": text(63, blank=True, pattern=LABEL_VALUE, strict=True),
}
POLICY_FIELDS = {
    "spec": never,
    "spec.apps": lambda v: v is not None,
    "spec.ingress": lambda v: v not in (None, []),
    "spec.egress": lambda v: v not in (None, []),
    "spec.ingress[0].from[0].app": text(63, pattern=DNS_LABEL, strict=True),
    "spec.ingress[0].from[1].cidr": cidr(strict=False),
    "spec.ingress[0].ports[0].protocol": one_of("tcp", "udp"),
    "spec.ingress[0].ports[0].port": integer(1, 65535),
    "spec.hostile_unknown_field": never,
}


GiB = 2**30
POOL_ROOM = 100 * GiB  # the hostile pool's free space: a bigger size is a 409, not a 2xx


def size(*, above: int = 0) -> Callable[[object], bool]:
    """A volume size (units like 10Gi, at least 1Mi) bigger than `above` that fits in the pool."""
    from django.core.exceptions import ValidationError

    from storage.services import parse_size

    def refuse(value) -> bool:
        if text(1000)(value):
            return True
        try:
            number = parse_size(_text_of(value).strip())
        except ValidationError:
            return True
        return not above < number <= POOL_ROOM + above

    return refuse


def every(value) -> bool:
    """A snapshot schedule's interval: a duration of a minute to a year and a day, or 0/off to remove it."""
    if text(1000)(value):
        return True
    content = _text_of(value).strip()
    if content in ("0", "off"):
        return False
    try:
        parse_duration(content, low=60, high=366 * 86400)
    except QuantityError:
        return True
    return False


def pool_path(value) -> bool:
    if text(512, strict=True)(value):
        return True
    return not value.strip().startswith("/") or ".." in value.strip().split("/")


def http_url(value) -> bool:
    """A notifier's URL: text, http:// or https:// with a host, no spaces or control characters."""
    return not (
        isinstance(value, str) and len(value) <= 2048 and re.fullmatch(r"https?://[A-Za-z0-9.\[\]:-]+(/\S*)?", value)
    )


def webhook_secret(value) -> bool:
    return not (isinstance(value, str) and 16 <= len(value) <= 2048 and not limits.control_character(value))


def backup_path(value, owner: str = "tenant-a") -> bool:
    """A local backup location's directory: relative (or in full) under the tenant's backup
    directory (a platform location's: `_platform`)."""
    if not isinstance(value, str):
        return True
    root = f"{django_settings.BACKUP_DIR}/{owner}/"
    relative = value[len(root) :] if value.startswith(root) else value
    segment = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
    return len(relative) > 255 or not re.fullmatch(rf"{segment}(/{segment})*", relative)


def platform_backup_path(value) -> bool:
    return backup_path(value, "_platform")


def cron(value) -> bool:
    """A backup policy's schedule: blank, or 5 cron fields (minute hour day-of-month month day-of-week)."""
    from celery.schedules import crontab

    if not isinstance(value, str) or len(value) > 100 or limits.control_character(value):
        return True
    parts = value.split()
    if not parts:
        return False
    if len(parts) != 5:
        return True
    try:
        crontab(minute=parts[0], hour=parts[1], day_of_month=parts[2], month_of_year=parts[3], day_of_week=parts[4])
    except (ValueError, TypeError, IndexError):
        return True
    return False


def passphrase(value) -> bool:
    """A key export's passphrase: 12 to 1024 characters of text (numbers read as their text)."""
    content = _text_of(value)
    if content is None or not 12 <= len(content) <= 1024 or "\x00" in content:
        return True
    try:
        content.encode()
    except UnicodeEncodeError:
        return True
    return False


BACKUP_PASSPHRASE = "hostile-backup-passphrase"
NOTIFIER_URL = "https://hooks.example.com/hostile"
NOTIFIER_SECRET = "hostile-webhook-secret-0123"


@dataclass
class Base:
    """A valid-looking payload and, per field path, whether a value must be refused."""

    payload: dict | None  # None: the operation takes no body
    fields: dict[str, Callable[[object], bool]]
    reason: str = ""


BASE: dict[str, Base] = {
    "apps_create": Base(
        {"tenant": "tenant-a", "name": "web", "service_name": "web", "replicas": 1, "spec": spec()},
        {
            "tenant": never,
            "name": text(63, pattern=DNS_LABEL),
            "service_name": text(63, blank=True, pattern=DNS_LABEL),
            "replicas": integer(0, 1000),
            **SPEC_FIELDS,
        },
    ),
    "apps_partial_update": Base(
        {"spec": spec(), "change": "hostile"}, {"change": text(200, blank=True), **SPEC_FIELDS}
    ),
    "apps_rollback_create": Base({"revision": 1}, {"revision": integer(1, 1)}),
    "apps_scale_create": Base({"replicas": 2}, {"replicas": integer(0, 1000)}),
    "auth_login_create": Base(
        {"username": "operator-a", "password": PASSWORD, "name": "cli", "expires_in_days": 30},
        {"username": never, "password": never, "name": text(100), "expires_in_days": integer(1, 365)},
    ),
    "memberships_create": Base(
        {"tenant": "tenant-a", "user": "granted", "role": "viewer"},
        {"tenant": never, "user": never, "role": one_of("viewer", "operator", "admin", "owner")},
    ),
    "memberships_partial_update": Base({"role": "operator"}, {"role": one_of("viewer", "operator", "admin", "owner")}),
    "nodes_label_create": Base(
        {"set": {"zone": "eu-1"}, "remove": ["old"]},
        {
            "set": lambda v: v != {},
            "set.zone": text(63, blank=True, pattern=LABEL_VALUE),
            "remove": lambda v: not isinstance(v, list),
            "remove[0]": text(317),
        },
    ),
    "nodes_taint_create": Base(
        {"add": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}], "remove": []},
        {
            "add": lambda v: v != [],
            "add[0].key": text(317, pattern=r"[A-Za-z0-9./_-]+"),
            "add[0].value": text(63, blank=True, pattern=LABEL_VALUE),
            "add[0].effect": one_of("NoSchedule", "PreferNoSchedule", "NoExecute"),
        },
    ),
    "reservations_create": Base(
        {"tenant": "tenant-a", "amounts": {"cpu": "100m", "memory": "16Mi", "containers": 1}, "reason": "hostile"},
        {
            "tenant": never,
            "amounts": never,
            "amounts.cpu": quantity(parse_cpu),
            "amounts.memory": quantity(parse_bytes),
            "amounts.containers": quantity(parse_count),
            "reason": text(200, blank=True),
        },
    ),
    "service_accounts_create": Base(
        {"tenant": "tenant-a", "name": "bot", "description": "a bot", "role": "viewer"},
        {
            "tenant": never,
            "name": text(50, pattern=SLUG),
            "description": text(blank=True, multiline=True),
            "role": one_of("admin", "operator", "viewer"),
        },
    ),
    "tenants_create": Base(
        {"name": "Tenant C", "slug": "tenant-c", "description": "", "isolation_level": "soft", "labels": {"team": "x"}},
        {**TENANT_FIELDS, "slug": text(50, pattern=SLUG)},
    ),
    "tenants_update": Base(
        {"name": "Tenant A", "slug": "tenant-a", "description": "", "isolation_level": "soft", "labels": {"team": "x"}},
        TENANT_FIELDS,
    ),
    "tenants_partial_update": Base({"name": "Tenant A", "labels": {"team": "x"}}, TENANT_FIELDS),
    "tenants_quota_update": Base(dict(QUOTA), QUOTA_FIELDS),
    "tokens_create": Base(
        {"name": "ci", "expires_in_days": 30},
        {
            "name": text(100),
            "expires_in_days": integer(1, 3650),
            "expires_at": lambda v: v is not None,
            "service_account": lambda v: v is not None,
        },
    ),
    "users_create": Base(
        {
            "username": "new-user",
            "email": "new@example.com",
            "first_name": "New",
            "last_name": "User",
            "is_staff": False,
            "password": PASSWORD,
        },
        {
            "username": text(150, pattern=r"[\w.@+-]+"),
            "email": lambda v: (
                v not in ("", "   ") and not (isinstance(v, str) and re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", v))
            ),
            "first_name": text(150, blank=True),
            "last_name": text(150, blank=True),
            "is_staff": bool_field,
            "password": password,
        },
    ),
    "users_partial_update": Base(
        {"email": "a@example.com", "first_name": "A", "last_name": "B", "is_staff": False},
        {
            "email": lambda v: (
                v not in ("", "   ") and not (isinstance(v, str) and re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", v))
            ),
            "first_name": text(150, blank=True),
            "last_name": text(150, blank=True),
            "is_staff": bool_field,
        },
    ),
    "users_password_create": Base({"password": PASSWORD + "2"}, {"password": password}),
    "networks_create": Base(
        {
            "tenant": "tenant-a",
            "name": "net",
            "ipv4": True,
            "ipv6": True,
            "prefix4": 24,
            "prefix6": 64,
            "labels": {"tier": "db"},
            "default_deny": False,
        },
        {
            "tenant": never,
            "name": text(63, pattern=DNS_LABEL),
            "ipv4": bool_field,
            "ipv6": bool_field,
            "prefix4": integer(8, 28),
            "prefix6": integer(48, 80),
            "default_deny": bool_field,
            **NETWORK_LABELS,
        },
    ),
    "networks_partial_update": Base(
        {"labels": {"tier": "web"}, "default_deny": True}, {"default_deny": bool_field, **NETWORK_LABELS}
    ),
    "network_policies_create": Base(
        {"tenant": "tenant-a", "name": "pol", "spec": policy_spec()},
        {"tenant": never, "name": text(63, pattern=DNS_LABEL), **POLICY_FIELDS},
    ),
    "network_policies_partial_update": Base({"spec": policy_spec()}, POLICY_FIELDS),
    "ip_pools_create": Base(
        {"name": "edge", "cidr": "10.252.0.0/16", "default_prefix": 24, "is_default": False},
        {
            "name": text(63, pattern=DNS_LABEL),
            "cidr": cidr(strict=True),
            "default_prefix": integer(16, 28),
            "is_default": bool_field,
        },
    ),
    "ip_pools_partial_update": Base(
        {"default_prefix": 24, "is_default": False}, {"default_prefix": integer(16, 28), "is_default": bool_field}
    ),
    "volumes_create": Base(
        {
            "tenant": "tenant-a",
            "name": "vol",
            "size": "1Gi",
            "pool": "hostile-storage",
            "access_mode": "ReadWriteOnce",
            "encrypted": False,
            "labels": {"tier": "db"},
        },
        {
            "tenant": never,
            "name": text(63, pattern=DNS_LABEL),
            "size": size(),
            "pool": lambda v: v != "hostile-storage",
            "access_mode": one_of("ReadWriteOnce", "ReadOnlyMany"),
            "encrypted": bool_field,
            **NETWORK_LABELS,
        },
    ),
    "volumes_snapshot_schedule_create": Base({"every": "1h", "keep": 24}, {"every": every, "keep": integer(1, 1000)}),
    "volumes_expand_create": Base({"size": "2Gi"}, {"size": size(above=GiB)}),
    "volumes_snapshot_create": Base({"name": "snap"}, {"name": text(63, pattern=DNS_LABEL)}),
    "volumes_replicate_create": Base(
        {"pool": "hostile-replica", "interval": 60},
        {"pool": lambda v: v != "hostile-replica", "interval": integer(5, 7 * 86400, null=True)},
    ),
    "volumes_promote_create": Base({"force": False}, {"force": bool_field}),
    "volumes_revert_create": Base({"snapshot": "hostile-snap"}, {"snapshot": lambda v: v != "hostile-snap"}),
    "volumes_clone_create": Base(
        {"snapshot": "hostile-snap", "name": "copy", "labels": {"tier": "db"}},
        {"snapshot": lambda v: v != "hostile-snap", "name": text(63, pattern=DNS_LABEL), **NETWORK_LABELS},
    ),
    "storage_pools_create": Base(
        {
            "name": "edge-pool",
            "provider": "local",
            "node": "hostile-node",
            "path": "/srv/edge",
            "options": {},
            "is_default": False,
        },
        {
            "name": text(63, pattern=DNS_LABEL),
            "provider": one_of("local", "btrfs"),
            "node": lambda v: v != "hostile-node",
            "path": pool_path,
            "options": lambda v: v != {},  # a local pool takes none
            "secrets": lambda v: v not in ({}, None),  # nor secrets
            "is_default": bool_field,
        },
    ),
    "notifiers_create": Base(
        {
            "tenant": "tenant-a",
            "name": "hostile-hook",
            "kind": "webhook",
            "config": {"url": NOTIFIER_URL},
            "secrets": {"secret": NOTIFIER_SECRET},
        },
        {
            "tenant": never,
            "name": text(63, pattern=DNS_LABEL),
            "kind": one_of("webhook"),  # another kind does not take a webhook's settings
            "config": never,
            "config.url": http_url,
            "secrets": never,
            "secrets.secret": webhook_secret,
        },
    ),
    "notifiers_partial_update": Base(
        {"name": "hostile-renamed", "config": {"url": NOTIFIER_URL + "/2"}, "secrets": {"secret": NOTIFIER_SECRET}},
        {
            "name": text(63, pattern=DNS_LABEL),
            "config": lambda v: v != {},  # {} changes nothing; anything else but an object is refused
            "config.url": http_url,
            "secrets": lambda v: v != {},
            "secrets.secret": webhook_secret,
        },
    ),
    "backup_locations_create": Base(
        {"tenant": "tenant-a", "name": "hostile-location", "kind": "local", "config": {"path": "hostile"}},
        {
            "tenant": never,
            "name": text(63, pattern=DNS_LABEL),
            "kind": one_of("local"),  # another kind does not take a directory
            "config": never,
            "config.path": backup_path,
        },
    ),
    "backup_locations_partial_update": Base(
        {"name": "hostile-moved", "config": {"path": "hostile-2"}},
        {
            "name": text(63, pattern=DNS_LABEL),
            "config": lambda v: v != {},  # {} changes nothing; anything else but an object is refused
            "config.path": backup_path,
        },
    ),
    "platform_backup_locations_create": Base(
        {"name": "hostile-platform", "kind": "local", "config": {"path": "hostile-p"}},
        {
            "name": text(63, pattern=DNS_LABEL),
            "kind": one_of("local"),
            "config": never,
            "config.path": platform_backup_path,
        },
    ),
    "platform_backup_locations_partial_update": Base(
        {"name": "hostile-p-moved", "config": {"path": "hostile-p2"}},
        {
            "name": text(63, pattern=DNS_LABEL),
            "config": lambda v: v != {},
            "config.path": platform_backup_path,
        },
    ),
    # tenant-a has no repository there yet: a 409 saying so; any other value names no tenant.
    "platform_backup_locations_sync_create": Base({"tenant": "tenant-a"}, {"tenant": never}),
    "backup_policies_create": Base(
        {
            "tenant": "tenant-a",
            "name": "hostile-policy",
            "location": "hostile-location-0",
            "scope": "tenant",
            "names": [],
            "schedule": "0 3 * * *",
            "keep_last": 3,
            "keep_daily": 7,
            "verify_schedule": "",
            "verify_read_percent": 0,
            "enabled": True,
        },
        {
            "tenant": never,
            "name": text(63, pattern=DNS_LABEL),
            "location": never,
            "scope": one_of("tenant"),  # another scope needs names
            "names": lambda v: v != [],
            "schedule": cron,
            "keep_last": integer(0, 10000),
            "keep_daily": integer(0, 10000),
            "verify_schedule": cron,
            "verify_read_percent": integer(0, 100),
            "enabled": bool_field,
        },
    ),
    "backup_policies_partial_update": Base(
        {"name": "hostile-policy-2", "schedule": "0 4 * * *", "keep_last": 5},
        {"name": text(63, pattern=DNS_LABEL), "schedule": cron, "keep_last": integer(0, 10000)},
    ),
    "backup_policies_verify_create": Base({"read_percent": 10}, {"read_percent": integer(0, 100)}),
    "backups_verify_create": Base({"read_percent": 10}, {"read_percent": integer(0, 100)}),
    "backups_restore_create": Base(
        {"tenant": "tenant-a", "selection": {"apps": ["target"]}, "conflicts": "skip", "dry_run": True},
        {
            "tenant": never,
            "selection": lambda v: v != {},
            "conflicts": one_of("skip", "replace", "rename"),
            "dry_run": bool_field,
        },
    ),
    "backups_create": Base(
        {"tenant": "tenant-a", "location": "hostile-location-0", "scope": "tenant", "names": []},
        {"tenant": never, "location": never, "scope": one_of("tenant"), "names": lambda v: v != []},
    ),
    "restores_create": Base(
        {"tenant": "tenant-a", "backup": None, "selection": {"apps": ["target"]}, "conflicts": "skip", "dry_run": True},
        {
            "tenant": never,
            "backup": never,
            "selection": lambda v: v != {},
            "conflicts": one_of("skip", "replace", "rename"),
            "dry_run": bool_field,
        },
    ),
    "restores_export_keys_create": Base(
        {"tenant": "tenant-a", "passphrase": BACKUP_PASSPHRASE}, {"tenant": never, "passphrase": passphrase}
    ),
    "restores_import_keys_create": Base(
        {"tenant": "tenant-a", "passphrase": BACKUP_PASSPHRASE, "document": None},
        {"tenant": never, "passphrase": never, "document": never},
    ),
    # tenant-a has no repository in the platform location: skipped, nothing started either way.
    "platform_backup_locations_restore_create": Base(
        {"tenants": ["tenant-a"], "conflicts": "replace", "dry_run": True},
        {"tenants": never, "conflicts": one_of("skip", "replace", "rename"), "dry_run": bool_field},
    ),
    "platform_backup_locations_export_keys_create": Base({"passphrase": BACKUP_PASSPHRASE}, {"passphrase": passphrase}),
    "platform_backup_locations_import_keys_create": Base(
        {"passphrase": BACKUP_PASSPHRASE, "document": None}, {"passphrase": never, "document": never}
    ),
    "storage_pools_partial_update": Base({"is_default": False}, {"is_default": bool_field}),
    "workflows_create": Base(
        {"kind": "noop", "tenant": "tenant-a", "params": {"steps": 1}},
        {"kind": never, "tenant": never, "params": lambda v: v not in ({},)},
    ),
}


def threshold(value) -> bool:
    """An alert rule's threshold: a finite number (or its text) of at most 1e15 either way, not a boolean."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        return True
    try:
        number = float(value)
    except (TypeError, ValueError):
        return True
    return not math.isfinite(number) or abs(number) > 1e15


ALERT_METRIC = "hivemind_app_replicas_desired"  # served for the fixture's app "target"
ALERT_RULE_FIELDS = {
    "metric": lambda v: v != ALERT_METRIC,
    "matchers": never,
    "matchers[0].label": text(63, pattern=r"[a-zA-Z_][a-zA-Z0-9_]*", strict=True),
    "matchers[0].value": text(200, blank=True, strict=True),
    "aggregation": one_of("avg", "min", "max", "sum", "count", "last", "rate", "increase"),
    "window": quantity(parse_duration, low=1, high=7 * 86400),
    "by": never,
    "threshold": threshold,
    "for": quantity(parse_duration, low=0, high=7 * 86400),
    "labels": never,
    "labels.team": text(200, blank=True, strict=True),
    "annotations.summary": text(2000, blank=True, multiline=True, strict=True),
}  # the other fields are choices, durations and lists read as these are (tests/alerting/test_api.py)

ALERT_RULE_SHARED = ("metric", "matchers[0].value", "window", "threshold", "annotations.summary")


def alert_rule() -> dict:
    return {
        "metric": ALERT_METRIC,
        "matchers": [{"label": "app", "op": "=", "value": "target"}],
        "aggregation": "avg",
        "window": "5m",
        "by": ["app"],
        "comparison": ">",
        "threshold": 1,
        "for": "1m",
        "severity": "warning",
        "labels": {"team": "web"},
        "annotations": {"summary": "{{ labels.app }} at {{ value }}"},
        "group_by": ["app"],
        "repeat_interval": "1h",
        "enabled": True,
    }


BASE.update(
    {
        "alert_rules_create": Base(
            {"tenant": "tenant-a", "name": "hostile-new", "kind": "metric", **alert_rule()},
            {"tenant": never, "name": text(63, pattern=DNS_LABEL), "kind": one_of("metric"), **ALERT_RULE_FIELDS},
        ),
        # The same serializer and checks as create: the fields that reach the service differently.
        "alert_rules_partial_update": Base(alert_rule(), {k: ALERT_RULE_FIELDS[k] for k in ALERT_RULE_SHARED}),
        "alert_rules_preview_create": Base(
            {"tenant": "tenant-a", **alert_rule()},
            {"tenant": never, **{k: ALERT_RULE_FIELDS[k] for k in ALERT_RULE_SHARED}},
        ),
        "silences_create": Base(
            {
                "tenant": "tenant-a",
                "matchers": [{"label": "app", "op": "=", "value": "target"}],
                "duration": "2h",
                "comment": "hostile",
            },
            {
                "tenant": never,
                "matchers": never,
                "matchers[0].label": text(63, pattern=r"[a-zA-Z_][a-zA-Z0-9_]*", strict=True),
                "matchers[0].op": one_of("=", "!=", "=~", "!~"),
                "duration": quantity(parse_duration, low=60, high=366 * 86400),
                "comment": text(500, blank=True),
            },
        ),
        "silences_expire_create": Base(None, {}, reason="an action without a body: nothing to send"),
    }
)

for _id in (
    "apps_restart_create",
    "backup_locations_check_create",
    "backup_locations_sync_create",
    "platform_backup_locations_check_create",
    "backup_policies_prune_create",
    "backup_policies_run_create",
    "notifiers_test_create",
    "nodes_cordon_create",
    "nodes_drain_create",
    "nodes_uncordon_create",
    "tenants_resume_create",
    "tenants_suspend_create",
    "users_activate_create",
    "users_deactivate_create",
    "workflows_cancel_create",
    "workflows_retry_create",
):
    BASE[_id] = Base(None, {}, reason="an action without a body: nothing to send")

# Query parameters: the kind of each (by name; a schema enum or format decides the rest).
QUERY_KINDS: dict[str, Callable[[object], bool]] = {
    "limit": integer(1, 1000),
    "offset": integer(0, 1_000_000_000),
    "tail": integer(1, 10_000),
    "replica": integer(0, 2**31),
}


# --- the harness ---------------------------------------------------------------------------------


@dataclass
class Operation:
    id: str
    method: str
    path: str
    query: list[dict]


def schema_operations() -> list[Operation]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            query = [p for p in op.get("parameters", []) if p["in"] == "query"]
            operations.append(Operation(op["operationId"], method, path, query))
    return operations


def _set(payload, path: str, value):
    """A copy of `payload` with the field at the dotted path (`spec.ports[0].container_port`) replaced."""
    payload = json.loads(json.dumps(payload))
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    target = payload
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    return payload


def _keys(body, prefix="") -> set[str]:
    keys = set()
    if isinstance(body, dict):
        for key, item in body.items():
            full = f"{prefix}.{key}" if prefix else str(key)
            keys |= {str(key), full} | _keys(item, full)
    elif isinstance(body, list):
        for item in body:
            keys |= _keys(item, prefix)
    return keys


def names_field(body, path: str, label: str) -> bool:
    """The 400 names the field: its path (or a part of it; inside the spec the path as the spec
    validator writes it, without `spec.`) is a key of the error body; a body that is not JSON
    at all is named by `detail`."""
    if label in NON_JSON:
        return isinstance(body, dict) and "detail" in body
    keys = _keys(body)
    inner = path.removeprefix("spec.")
    prefixes = set()
    for candidate in (path, inner):
        pieces = re.split(r"(?=[.\[])", candidate)
        prefixes |= {"".join(pieces[: i + 1]) for i in range(len(pieces))}
    if keys & prefixes or any(key.startswith((f"{p}.", f"{p}[")) for key in keys for p in prefixes):
        return True  # the field, a part of it, or a field inside it
    # A whole-body problem (an object where a field goes, too deep) is named in `detail` or `body`.
    return bool({"body"} & keys) and path.count(".") == 0


def snapshot() -> dict:
    """What a refused request must not change: rows and their values."""
    User = get_user_model()
    return {
        "tenants": list(Tenant.objects.order_by("pk").values()),
        "quotas": list(TenantQuota.objects.order_by("pk").values()),
        "usage": list(TenantUsage.objects.order_by("pk").values()),
        "reservations": list(QuotaReservation.objects.order_by("pk").values("pk", "state", "released_at")),
        "apps": list(App.objects.order_by("pk").values("pk", "name", "replicas", "revision_id", "status")),
        "revisions": AppRevision.objects.count(),
        "workflows": list(Workflow.objects.order_by("pk").values("pk", "state")),
        "steps": Step.objects.count(),
        "memberships": list(Membership.objects.order_by("pk").values("pk", "role")),
        "service_accounts": ServiceAccount.objects.count(),
        "tokens": list(ApiToken.objects.order_by("pk").values("pk", "revoked_at")),
        "users": list(
            User.objects.order_by("pk").values(
                "pk", "email", "first_name", "last_name", "is_staff", "is_active", "password"
            )
        ),
        "nodes": list(Node.objects.order_by("pk").values("pk", "labels", "taints", "status")),
        "networks": list(Network.objects.order_by("pk").values()),
        "pools": list(IPPool.objects.order_by("pk").values()),
        "policies": list(NetworkPolicy.objects.order_by("pk").values()),
        "volume_replicas": list(VolumeReplica.objects.order_by("pk").values()),
        "alert_rules": list(AlertRule.objects.order_by("pk").values()),
        "silences": list(Silence.objects.order_by("pk").values()),
        "notifiers": list(Notifier.objects.order_by("pk").values()),
        "backup_locations": list(BackupLocation.objects.order_by("pk").values()),
        "backup_policies": list(BackupPolicy.objects.order_by("pk").values()),
        "backups": list(Backup.objects.order_by("pk").values()),
        "restores": Restore.objects.count(),
    }


def writes() -> int | None:
    """Rows inserted, updated or deleted so far in this transaction, its savepoints included
    (PostgreSQL's pg_stat_xact_user_tables; None elsewhere). A request that left it unchanged
    wrote nothing, so its snapshot (20 queries) need not be taken."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables")
        return int(cursor.fetchone()[0])


def managed_containers(docker_client) -> list[str]:
    return sorted(c.id for c in docker_client.containers.list(all=True, filters={"label": "io.hivemind.managed=true"}))


@pytest.fixture
def objects(world):
    """What the detail operations act on: an app with a revision in tenant A, a node, a membership."""
    User = get_user_model()
    for user in User.objects.all():
        user.set_password(PASSWORD)
        user.save()
    Node.objects.update_or_create(
        name="hostile-node", defaults={"cpu_millis": 4000, "memory_bytes": 8 * 2**30, "status": Node.Status.READY}
    )
    app = app_services.app_deploy(tenant=world.a, name="target", spec=spec(), replicas=1, actor=world.users["staff"])
    membership = Membership.objects.get(tenant=world.a, user=world.users["viewer"])
    workflow = Workflow.objects.order_by("-pk").first()
    staff = world.users["staff"]
    network = network_services.network_create(tenant=world.a, name="hostile-net", actor=staff)
    policy, _ = network_services.policy_apply(tenant=world.a, name="hostile-policy", spec=policy_spec(), actor=staff)
    pool = network_services.pool_create(name="hostile-pool", cidr="10.251.0.0/16", actor=staff)
    storage_pool = StoragePool.objects.create(
        name="hostile-storage", provider="btrfs", node=Node.objects.get(name="hostile-node"), path="/srv/hostile",
        capacity_bytes=POOL_ROOM, free_bytes=POOL_ROOM,
    )  # fmt: skip
    replica_node, _ = Node.objects.update_or_create(
        name="hostile-node-2", defaults={"cpu_millis": 4000, "memory_bytes": 8 * 2**30, "status": Node.Status.READY}
    )
    StoragePool.objects.create(
        name="hostile-replica", provider="btrfs", node=replica_node, path="/srv/hostile-replica",
        capacity_bytes=POOL_ROOM, free_bytes=POOL_ROOM,
    )  # fmt: skip
    volume = storage_services.volume_create(
        tenant=world.a, name="hostile-volume", size="1Gi", pool="hostile-storage", actor=staff
    )
    Volume.objects.filter(pk=volume.pk).update(status=Volume.Status.READY)
    snap = storage_services.snapshot_create(volume=Volume.objects.get(pk=volume.pk), name="hostile-snap", actor=staff)
    Snapshot.objects.filter(pk=snap.pk).update(status=Snapshot.Status.READY)
    notifier = notifier_services.notifier_create(
        tenant=world.a, name="hostile-notifier", kind="webhook", config={"url": NOTIFIER_URL},
        secrets={"secret": NOTIFIER_SECRET}, actor=staff,
    )  # fmt: skip
    location = backup_services.location_create(
        tenant=world.a, name="hostile-location-0", kind="local", config={"path": "hostile-0"}, actor=staff
    )
    policy = BackupPolicy.objects.create(tenant=world.a, name="hostile-policy-0", location=location, keep_last=3)
    shared = backup_services.location_create(
        tenant=None, name="hostile-shared", kind="local", config={"path": "hostile-shared"}, actor=staff
    )
    shutil.rmtree(location.config["path"], ignore_errors=True)  # an earlier test's repository, its key rolled back
    repository = open_for(location, create=True)
    state = repository.backup_blob("state", dumps(tenant_state(world.a)), meta={"kind": "state"})
    backup = Backup.objects.create(tenant=world.a, location=location, status="succeeded", state_snapshot=state.id,
                                   repository_id=repository.id)  # fmt: skip
    # What the restore and key import bodies name: this backup, and this tenant's export.
    BASE["restores_create"].payload["backup"] = backup.pk
    BASE["restores_import_keys_create"].payload["document"] = export_keys(world.a, BACKUP_PASSPHRASE)
    BASE["platform_backup_locations_import_keys_create"].payload["document"] = export_platform_keys(BACKUP_PASSPHRASE)
    rule = alert_services.rule_create(
        tenant=world.a, name="hostile-rule", metric="hivemind_app_replicas_desired", actor=staff
    )
    silence = alert_services.silence_create(
        tenant=world.a, matchers=[{"label": "app", "op": "=", "value": "target"}],
        ends_at=rule.created_at + timedelta(days=1), actor=staff,
    )  # fmt: skip
    now = rule.created_at
    alert = Alert.objects.create(
        tenant=world.a, rule=rule, fingerprint="hostile", group_key="g", labels={"app": "target"}, state="firing",
        active_at=now, evaluated_at=now,
    )  # fmt: skip
    return {
        "id": {
            "apps": app.pk,
            "alert-rules": rule.pk,
            "silences": silence.pk,
            "alerts": alert.pk,
            "memberships": membership.pk,
            "workflows": workflow.pk,
            "networks": network.pk,
            "network-policies": policy.pk,
            "ip-pools": pool.pk,
            "volumes": volume.pk,
            "snapshots": snap.pk,
            "storage-pools": storage_pool.pk,
            "notifiers": notifier.pk,
            "backup-locations": location.pk,
            "platform-backup-locations": shared.pk,
            "backup-policies": policy.pk,
            "backups": backup.pk,
        },
        "slug": "tenant-a",
        "name": "hostile-node",
        "username": "granted",
    }


def _url(operation: Operation, objects: dict) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name == "id":
            resource = operation.path.split("/")[3]
            return str(objects["id"][resource])
        return objects[name]

    return re.sub(r"\{(\w+)\}", value, operation.path)


class Thrower:
    """Sends one hostile request and checks the answer, the database and Docker."""

    def __init__(self, client, docker_client, who: str):
        self.client, self.docker_client, self.who = client, docker_client, who
        self.failures: list[str] = []
        self.sent = 0
        # Every request runs in a savepoint rolled back after it, so the rows before each one are
        # the rows before the first: read once (a snapshot is 20 queries; per request it was a
        # third of the suite's time). `unchanged()` checks that at the end.
        self.before: dict | None = None

    def unchanged(self) -> None:
        if self.before is not None and snapshot() != self.before:
            self.failures.append(f"[{self.who}] the rows changed over the test: a request escaped its rollback")

    def _call(self, method: str, url: str, body=None, query=None):
        if body is None:
            return getattr(self.client, method)(url, query or {})
        data = json.dumps(body, allow_nan=True)
        return getattr(self.client, method)(url, data, content_type="application/json")

    def fail(self, what: str, response) -> None:
        shown = response.content[:300].decode(errors="replace")
        self.failures.append(f"[{self.who}] {what}: {response.status_code} {shown}")

    def body(self, operation: Operation, url: str, path: str, label: str, value, refuse: bool) -> None:
        base = BASE[operation.id].payload
        payload = {**base, "hostile_unknown_field": 1} if value is UNKNOWN else _set(base, path, value)
        if self.before is None:
            self.before = snapshot()
        before = self.before
        self.sent += 1
        with transaction.atomic():
            written = writes()
            response = self._call(operation.method, url, payload)
            status = response.status_code
            what = f"{operation.method.upper()} {operation.id} {path}={label}"
            if status >= 500:
                self.fail(what, response)
            elif 200 <= status < 300:
                if refuse:
                    self.fail(f"{what} accepted an invalid value", response)
            else:
                after = before if written is not None and writes() == written else snapshot()
                if after != before:
                    changed = [key for key in before if before[key] != after[key]]
                    self.fail(f"{what} was refused but changed {changed}", response)
                if status == 400:
                    body = _json(response)
                    if not names_field(body, "hostile_unknown_field" if value is UNKNOWN else path, label):
                        self.fail(f"{what}: the 400 does not name {path}", response)
            transaction.set_rollback(True)  # the next request starts from the same rows

    def query(self, operation: Operation, url: str, name: str, label: str, value: str, refuse: bool) -> None:
        self.sent += 1
        response = self.client.get(url, {name: value})
        status = response.status_code
        what = f"GET {operation.id} ?{name}={label}"
        if status >= 500:
            self.fail(what, response)
        elif 200 <= status < 300 and refuse:
            self.fail(f"{what} accepted an invalid value", response)
        elif status == 400 and name not in _keys(_json(response)):
            self.fail(f"{what}: the 400 does not name {name}", response)


def _json(response):
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _field_paths(operation: Operation) -> list[tuple[str, Callable]]:
    return list(BASE[operation.id].fields.items())


def generated_bodies(thrower: Thrower, operation: Operation, url: str):
    """Hypothesis' own hostile values (any control character, any huge number) in any field."""

    @settings(
        max_examples=GENERATED_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(field=st.sampled_from(_field_paths(operation)), value=generated_values)
    def generated(field, value):
        path, refuse = field
        non_json = isinstance(value, float) and not math.isfinite(value)
        label = "float nan" if non_json else repr(value)[:40]
        thrower.body(operation, url, path, label, value, True if non_json else refuse(value))

    return generated


def write_operations() -> list[Operation]:
    return sorted((op for op in schema_operations() if op.method in ("post", "put", "patch")), key=lambda op: op.id)


def test_every_write_operation_has_a_base_payload():
    operations = write_operations()
    missing = sorted(op.id for op in operations if op.id not in BASE)
    assert not missing, f"write operations without a base payload in BASE (add one): {missing}"
    documented = {op.id for op in operations}
    stale = sorted(set(BASE) - documented)
    assert not stale, f"BASE names operations the schema no longer has: {stale}"


# The write operations in shards, one test each: every area adds operations, and one test over
# all of them outgrew the per-test timeout; a shard names what failed sooner, too.
SHARDS = 6


@pytest.mark.parametrize("shard", range(SHARDS))
@pytest.mark.parametrize("who", ["staff", "operator"])
def test_hostile_bodies_at_every_write_operation(who, shard, world, objects, docker_client):
    with transaction.atomic():  # the shortcut that skips a snapshot sees a write in a savepoint
        seen = writes()
        Tenant.objects.filter(pk=world.a.pk).update(name="written")
        assert seen is None or writes() > seen
        transaction.set_rollback(True)
    operations = [op for i, op in enumerate(write_operations()) if i % SHARDS == shard and op.id in BASE]
    thrower = Thrower(world.client(who), docker_client, who)
    # Its token counts as just used for the test's length: the once-a-minute last_used_at write
    # (rolled back with each request, so due again at the next) would make every request a writer.
    ApiToken.objects.filter(user=world.users[who]).update(last_used_at=timezone.now() + timedelta(hours=1))
    containers = managed_containers(docker_client)
    for operation in operations:
        base = BASE[operation.id]
        if base.payload is None:
            continue
        url = _url(operation, objects)
        thrower.body(operation, url, "hostile_unknown_field", "unknown field", UNKNOWN, True)
        for path, refuse in _field_paths(operation):
            for label, value in HOSTILE:
                thrower.body(operation, url, path, label, value, refuse(value) if label not in NON_JSON else True)

        generated_bodies(thrower, operation, url)()
        assert managed_containers(docker_client) == containers, f"{operation.id} created a container"
    thrower.unchanged()
    assert thrower.sent > 200
    assert not thrower.failures, f"{len(thrower.failures)} failures:\n" + "\n".join(thrower.failures[:40])


QUERY_HOSTILE = [
    ("'NaN'", "NaN"),
    ("'Infinity'", "Infinity"),
    ("'-Infinity'", "-Infinity"),
    ("'-1'", "-1"),
    ("'-5'", "-5"),
    ("'9'*30", "9" * 30),
    ("10**20", str(10**20)),
    ("'1e30'", "1e30"),
    ("'abc'", "abc"),
    ("'maybe'", "maybe"),
    ("empty", ""),
    ("NUL", "a\x00b"),
    ("ESC", "\x1b[31m"),
    ("2000 chars", "x" * 2000),
    ("'[]'", "[]"),
    ("'null'", "null"),
]


def _query_refuse(name: str, schema: dict) -> Callable[[str], bool]:
    """Whether a hostile query value must be refused; free text (a name filter) may match nothing."""

    def refuse(value: str) -> bool:
        if len(value) > limits.MAX_QUERY_VALUE or limits.control_character(value):
            return True
        if name in ("limit", "offset"):
            return QUERY_KINDS[name](value)
        if name in QUERY_KINDS:
            return value != "" and QUERY_KINDS[name](value)
        if value == "":
            return False  # an empty filter is no filter
        items = schema.get("items", schema)
        if "enum" in items:
            return value not in items["enum"]
        if schema.get("type") == "boolean":
            return bool_field(value)
        if schema.get("type") == "integer":
            return integer(-(2**63), 2**63 - 1)(value)
        if schema.get("format") == "date-time":
            return True  # none of the hostile values is a timestamp
        if name == "since":
            return True  # a duration or a timestamp; no hostile value is either
        if name == "label":
            return not re.fullmatch(r"[A-Za-z0-9./_-]+(=[A-Za-z0-9._-]*)?", value)
        return False

    return refuse


@pytest.mark.parametrize("who", ["staff", "operator"])
def test_hostile_query_values_at_every_list_filter(who, world, objects):
    operations = [op for op in schema_operations() if op.method == "get" and op.query]
    assert any(op.id == "workflows_list" for op in operations)
    thrower = Thrower(world.client(who), None, who)
    for operation in operations:
        url = _url(operation, objects)
        for parameter in operation.query:
            refuse = _query_refuse(parameter["name"], parameter.get("schema", {}))
            for label, value in QUERY_HOSTILE:
                thrower.query(operation, url, parameter["name"], label, value, refuse(value))
    assert thrower.sent > 300
    assert not thrower.failures, f"{len(thrower.failures)} failures:\n" + "\n".join(thrower.failures[:40])
