"""The state serializer (backups/state): a rich tenant made through the services, serialized;
its shape and natural keys, determinism, no secret and no database id in the bytes, load()'s
round trip, upgrades and errors, the stored fixture of every version, and plan() (skip,
replace, rename, a rename mapping into another tenant) reading without writing.

Nothing here needs a node at work: in a `db` test nothing commits, so no workflow message is
sent (as in tests/applications/test_apps_api.py).

Each version's fixture was written once by this file from `rich_tenant` (v2 added a backup
policy to it):
    HIVEMIND_WRITE_STATE_FIXTURE=1 pytest tests/backups/test_state.py -k fixture
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerting import services as alerting
from backups import policies
from backups import services as backups
from backups.state import FORMAT, VERSION, StateError, dumps, load, plan, platform_state, tenant_state
from backups.state.schema import UPGRADES, upgrade
from hivemind.applications import services as apps
from hivemind.applications.models import App
from hivemind.nodes.models import Node
from networking import services as networking
from networking.models import Network
from notifiers import services as notifiers
from storage import schedules
from storage import services as storage
from storage.models import StoragePool, Volume, VolumeReplica
from tenants import services as tenants
from tenants.models import Role, Tenant

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures"
CREATED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECRET = "notifier-secret-d41d8cd98f00b204"
GiB = 1 << 30
SPEC = {
    "image": "hivemind/busybox:latest",
    "command": "httpd -f -p 8080",
    "resources": {"cpu": "100m", "memory": "16Mi"},
}


def _pool(name: str, node: str) -> StoragePool:
    found, _ = Node.objects.get_or_create(
        name=node, defaults={"address": "10.250.0.1", "cpu_millis": 4000, "memory_bytes": 8 * GiB, "status": "ready"}
    )
    return StoragePool.objects.create(
        name=name, provider="btrfs", node=found, path=f"/srv/{name}", is_default=name == "fast",
        capacity_bytes=100 * GiB, free_bytes=100 * GiB, options={"compression": "zstd", "api_token": "host-secret"},
    )  # fmt: skip


@pytest.fixture
def rich_tenant(db) -> Tenant:
    """Tenant `shop`: members and a service account, a quota, a network with a policy, volumes
    (a schedule, a replica, an app's template volume), two apps (one with two revisions), a
    notifier with a secret, an alert rule using it, a silence."""
    User = get_user_model()
    staff = User.objects.create_user("staff", is_staff=True)
    tenant = tenants.tenant_create(name="Shop", slug="shop", created_by=staff, labels={"team": "web"})
    tenants.quota_set(tenant=tenant, limits={"apps": 10, "memory": 4 * GiB, "backups": None}, actor=staff)
    for username, role in (("alice", Role.OWNER), ("bob", Role.VIEWER)):
        tenants.membership_add(tenant=tenant, user=User.objects.create_user(username), role=role, actor=staff)
    tenants.service_account_create(tenant=tenant, name="ci", role=Role.OPERATOR, actor=staff, description="deploys")

    networking.network_create(tenant=tenant, name="backend", actor=staff, labels={"tier": "db"}, default_deny=True)
    policy = {
        "apps": ["api"],
        "ingress": [{"from": [{"app": "web"}, {"network": "backend"}], "ports": [{"protocol": "tcp", "port": 8080}]}],
    }
    networking.policy_apply(tenant=tenant, name="api-from-web", spec=policy, actor=staff)

    fast, _there = _pool("fast", "st-1"), _pool("there", "st-2")
    data = storage.volume_create(tenant=tenant, name="data", size="1Gi", actor=staff, labels={"app": "web"})
    Volume.objects.filter(pk=data.pk).update(status=Volume.Status.READY)
    schedules.schedule_set(volume=data, every="1h", keep=3, actor=staff)
    VolumeReplica.objects.create(volume=data, pool=_there, interval_seconds=600)

    web = apps.app_deploy(
        tenant=tenant, name="web", replicas=2, actor=staff,
        spec={**SPEC, "networks": ["backend"], "volumes": [{"volume": "data", "path": "/data"}],
              "labels": {"tier": "web"}},
    )  # fmt: skip
    apps.app_update(app=web, spec={**SPEC, "env": {"MODE": "v2"}, "networks": ["backend"],
                    "volumes": [{"volume": "data", "path": "/data"}]}, actor=staff, change="MODE v2")  # fmt: skip
    template = {"name": "cache", "size": "64Mi", "path": "/cache"}
    api = apps.app_deploy(tenant=tenant, name="api", spec={**SPEC, "volume_templates": [template]}, actor=staff)
    storage.volume_claim(app=api, name="api-cache-0", template={**template, "size": 64 << 20}, pool=fast)

    hook = notifiers.notifier_create(
        tenant=tenant, name="ops-hook", kind="webhook", config={"url": "https://hooks.example.com/x"},
        secrets={"secret": SECRET}, actor=staff,
    )  # fmt: skip
    alerting.rule_create(
        tenant=tenant, name="failures", kind="event", event="workflow_failed", severity="critical",
        labels={"team": "web"}, notifiers=[hook], actor=staff,
    )  # fmt: skip
    alerting.silence_create(
        tenant=tenant, matchers=[{"label": "app", "op": "=", "value": "web"}], actor=staff, comment="maintenance",
        ends_at=timezone.now() + timedelta(days=3650),
    )  # fmt: skip
    backups.location_create(tenant=tenant, name="offsite", kind="s3", actor=staff,
                            config={"bucket": "shop-backups", "endpoint_url": "https://s3.example.com"},
                            secrets={"access_key_id": "AKIDSHOP", "secret_access_key": SECRET})  # fmt: skip
    policies.policy_create(tenant=tenant, name="nightly-web", location="offsite", actor=staff, scope="apps",
                           names=["web"], schedule="0 3 * * *", keep_last=7, keep_weekly=4,
                           verify_schedule="0 5 * * 0", verify_read_percent=10)  # fmt: skip
    return tenant


def walk(value, path=""):
    """Every (path, key, value) of a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")


# -- serializing -------------------------------------------------------------------------
def test_tenant_document_has_every_section_by_natural_keys(rich_tenant):
    doc = tenant_state(rich_tenant, created=CREATED)
    assert {k: doc[k] for k in ("format", "version", "created", "kind")} == {
        "format": FORMAT, "version": VERSION, "created": "2026-11-30T12:00:00Z", "kind": "tenant",
    }  # fmt: skip
    assert doc["tenant"] == {
        "slug": "shop", "name": "Shop", "description": "", "isolation_level": "soft", "status": "active",
        "labels": {"team": "web"},
    }  # fmt: skip
    assert doc["quota"]["apps"] == 10 and doc["quota"]["memory"] == 4 * GiB and doc["quota"]["backups"] is None
    assert doc["members"] == [{"username": "alice", "role": "owner"}, {"username": "bob", "role": "viewer"}]
    assert doc["service_accounts"] == [{"name": "ci", "description": "deploys", "role": "operator"}]

    networks = {n["name"]: n for n in doc["networks"]}
    assert list(networks) == ["backend", "default"] and networks["default"]["is_default"]
    backend = networks["backend"]
    assert backend["default_deny"] and backend["labels"] == {"tier": "db"}
    assert backend["ipv4"]["prefix"] == int(backend["ipv4"]["subnet"].split("/")[1]) and backend["ipv4"]["pool"]
    assert doc["network_policies"][0]["name"] == "api-from-web"
    assert doc["network_policies"][0]["spec"]["ingress"][0]["from"] == [{"app": "web"}, {"network": "backend"}]

    volumes = {v["name"]: v for v in doc["volumes"]}
    assert list(volumes) == ["api-cache-0", "data"]
    assert volumes["data"] == {
        "name": "data", "size_bytes": GiB, "pool": "fast", "access_mode": "ReadWriteOnce", "encrypted": False,
        "labels": {"app": "web"}, "snapshot_schedule": {"every": 3600, "keep": 3, "enabled": True},
        "replica": {"pool": "there", "every": 600},
    }  # fmt: skip
    assert volumes["api-cache-0"]["labels"] == {"app": "api", "template": "cache"}

    by_name = {a["name"]: a for a in doc["apps"]}
    assert [a["name"] for a in doc["apps"]] == ["api", "web"]
    web = by_name["web"]
    assert web["replicas"] == 2 and web["revision"] == 2 and web["service_name"] == "web"
    assert [r["number"] for r in web["revisions"]] == [1, 2] and web["revisions"][1]["change"] == "MODE v2"
    assert web["spec"] == web["revisions"][1]["spec"] and web["spec"]["env"] == {"MODE": "v2"}
    assert web["spec"]["networks"] == ["backend"] and web["spec"]["volumes"][0]["volume"] == "data"
    assert web["revisions"][0]["created_by"] == "staff"
    assert by_name["api"]["spec"]["volume_templates"][0]["name"] == "cache"

    assert doc["notifiers"] == [{"name": "ops-hook", "kind": "webhook", "config": {"url": "https://hooks.example.com/x"},
                                 "secrets_to_reenter": ["secret"]}]  # fmt: skip
    rule = doc["alert_rules"][0]
    assert rule["name"] == "failures" and rule["event"] == "workflow_failed" and rule["notifiers"] == ["ops-hook"]
    assert doc["silences"][0]["comment"] == "maintenance" and doc["silences"][0]["created_by"] == "staff"
    assert doc["backup_policies"] == [{
        "name": "nightly-web", "location": "offsite", "scope": "apps", "names": ["web"], "schedule": "0 3 * * *",
        "keep_last": 7, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 4, "keep_monthly": 0,
        "verify_schedule": "0 5 * * 0", "verify_read_percent": 10, "enabled": True,
    }]  # fmt: skip


def test_no_secret_and_no_database_id_in_the_bytes(rich_tenant):
    raw = dumps(tenant_state(rich_tenant))
    assert SECRET.encode() not in raw and b"host-secret" not in raw  # the notifier's; pools are named only
    doc = json.loads(raw)
    for path, key, _value in walk(doc):
        assert key not in ("id", "pk", "vni", "sealed_secrets") and not key.endswith("_id"), f"{path}.{key}"
    network = Network.objects.get(tenant=rich_tenant, name="backend")
    described = next(n for n in doc["networks"] if n["name"] == "backend")
    assert network.vni and network.vni not in [value for _path, _key, value in walk(described)]
    assert b"volume-snapshots-" not in raw and b'"volume":' + str(Volume.objects.first().pk).encode() not in raw

    platform = dumps(platform_state())
    assert SECRET.encode() not in platform and b"host-secret" not in platform
    pools = {p["name"]: p for p in json.loads(platform)["storage_pools"]}
    assert pools["fast"]["options"] == {"compression": "zstd"} and pools["fast"]["secrets_to_reenter"] == ["api_token"]


def test_same_state_gives_the_same_bytes(rich_tenant):
    first = dumps(tenant_state(rich_tenant, created=CREATED))
    assert dumps(tenant_state(rich_tenant, created=CREATED)) == first
    assert dumps(platform_state(created=CREATED)) == dumps(platform_state(created=CREATED))
    # Only the envelope's time differs between two unpinned runs.
    later = tenant_state(rich_tenant)
    assert dumps({**later, "created": "2026-11-30T12:00:00Z"}) == first


def test_platform_document_has_nodes_pools_users_and_tenants(rich_tenant):
    node = Node.objects.get(name="st-1")
    node.labels, node.cordoned = {"zone": "a"}, True
    node.taints = [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]
    node.save()
    doc = platform_state(created=CREATED)
    assert doc["kind"] == "platform"
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert nodes["st-1"] == {"name": "st-1", "address": "10.250.0.1", "labels": {"zone": "a"},
                             "taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}],
                             "schedulable": False}  # fmt: skip
    assert nodes["st-2"]["schedulable"] is True
    assert [p["name"] for p in doc["storage_pools"]] == ["fast", "there"] and doc["storage_pools"][0]["node"] == "st-1"
    assert doc["ip_pools"] and all(p["cidr"] for p in doc["ip_pools"])
    usernames = [u["username"] for u in doc["users"]]
    assert usernames == ["alice", "bob", "staff"]  # the service account's user comes back with its account
    slugs = [t["tenant"]["slug"] for t in doc["tenants"]]
    assert slugs == sorted(Tenant.objects.values_list("slug", flat=True)) and "shop" in slugs
    shop = doc["tenants"][slugs.index("shop")]
    assert shop == {k: v for k, v in tenant_state(rich_tenant).items() if k not in ("format", "version", "created",
                    "kind")}  # fmt: skip
    assert load(dumps(doc)) == doc


# -- reading -------------------------------------------------------------------------------
def test_load_round_trip(rich_tenant):
    doc = tenant_state(rich_tenant, created=CREATED)
    assert load(dumps(doc)) == doc
    assert load(doc) == doc and load(dumps(doc).decode()) == doc


def _broken(doc: dict, change) -> dict:
    doc = json.loads(json.dumps(doc))
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="velero-backup"), "format: expected 'hivemind-state', got 'velero-backup'"),
        (lambda d: d.update(version=VERSION + 1), f"version: version {VERSION + 1} was written by a newer Hivemind"),
        (lambda d: d.update(version="1"), "version: expected a whole number from 1"),
        (lambda d: d.update(kind="cluster"), "kind: expected one of tenant, platform, got 'cluster'"),
        (lambda d: d["apps"][1]["spec"].update(image="Not An Image!"), "apps[1].spec.image: 'Not An Image!' is not"),
        (lambda d: d["apps"][1]["revisions"][0]["spec"].pop("image"), "apps[1].revisions[0].spec.image: required"),
        (lambda d: d["apps"][0]["spec"]["volumes"].append({"volume": "x"}), "apps[0].spec.volumes[0].path:"),
        (lambda d: d["apps"][1].update(revision=7), "apps[1].revision: revision 7 is not among the app's revisions"),
        (lambda d: d["apps"].append(dict(d["apps"][0])), "apps[2].name: api appears twice"),
        (lambda d: d["volumes"][1].update(size_bytes=-1), "volumes[1].size_bytes: expected 1 to more, got -1"),
        (lambda d: d["volumes"][1].pop("pool"), "volumes[1].pool: missing"),
        (lambda d: d["networks"][0].update(vni=4100), "networks[0].vni: unknown field"),
        (lambda d: d["members"][0].update(role="god"), "members[0].role: expected one of owner, admin"),
        (lambda d: d["network_policies"][0]["spec"]["ingress"][0]["ports"][0].update(port=70000),
         "network_policies[0].spec.ingress[0].ports[0].port:"),
        (lambda d: d["silences"][0].update(ends_at="soon"), "silences[0].ends_at: expected an ISO 8601 time"),
        (lambda d: d.update(created="2026-11-30T12:00:00"), "created: a time needs its zone"),
    ],
)  # fmt: skip
def test_load_names_the_bad_field(rich_tenant, change, message):
    doc = _broken(tenant_state(rich_tenant, created=CREATED), change)
    with pytest.raises(StateError) as caught:
        load(dumps(doc))
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "document: not JSON"),
        (b"[1, 2]", "document: expected a JSON object, got list"),
        (b"\xff\xfe", "document: not JSON"),
        (b'{"format": "hivemind-state"}', "version: expected a whole number from 1, got 'None'"),
        (b"[" * 100_000 + b"]" * 100_000, "document: nested too deeply"),
    ],
)
def test_load_refuses_what_is_not_a_document(db, raw, message):
    with pytest.raises(StateError) as caught:
        load(raw)
    assert str(caught.value).startswith(message), str(caught.value)


def test_upgrades_run_in_a_chain_one_version_at_a_time():
    seen = []

    def v1_to_v2(doc):
        seen.append(doc["version"])
        return {**doc, "apps": [{"image": a["img"]} for a in doc["apps"]]}

    def v2_to_v3(doc):
        seen.append(doc["version"])
        return {**doc, "renamed": True}

    old = {"format": FORMAT, "version": 1, "apps": [{"img": "nginx"}]}
    new = upgrade(old, to=3, steps={1: v1_to_v2, 2: v2_to_v3})
    assert new == {"format": FORMAT, "version": 3, "apps": [{"image": "nginx"}], "renamed": True}
    assert seen == [1, 2]
    with pytest.raises(StateError, match="version: no upgrade from version 2 to 3"):
        upgrade(old, to=3, steps={1: v1_to_v2})


def _fixture_versions() -> list[int]:
    return sorted(
        int(m.group(1)) for p in FIXTURES.glob("state-v*.json") if (m := re.match(r"state-v(\d+)\.json", p.name))
    )


def test_every_version_has_a_stored_fixture_and_an_upgrade_step():
    """Bumping VERSION without committing its fixture (and an upgrade from the one before) fails here."""
    assert _fixture_versions() == list(range(1, VERSION + 1))
    assert sorted(UPGRADES) == list(range(1, VERSION))


@pytest.mark.parametrize("version", range(1, VERSION + 1))
def test_stored_fixture_of_every_version_still_loads(db, version):
    raw = (FIXTURES / f"state-v{version}.json").read_bytes()
    assert json.loads(raw)["version"] == version
    doc = load(raw)
    assert doc["version"] == VERSION and doc["format"] == FORMAT and doc["kind"] == "tenant"
    assert doc["tenant"]["slug"] == "shop" and doc["apps"] and doc["volumes"] and doc["notifiers"]
    assert SECRET.encode() not in raw
    # What a version 1 document said survives any upgrade to the current one.
    assert {a["name"] for a in doc["apps"]} == {"api", "web"}
    # Version 2 added backup policies: a version 1 document had none.
    assert [p["name"] for p in doc["backup_policies"]] == ([] if version == 1 else ["nightly-web"])
    assert plan(doc, into_tenant="shop-copy")


def test_current_fixture_is_what_this_code_writes(rich_tenant):
    """The current version's fixture is `rich_tenant` as this code writes it, apart from times; it is
    (re)written only when asked, once per version: HIVEMIND_WRITE_STATE_FIXTURE=1."""
    doc = tenant_state(rich_tenant, created=CREATED)
    path = FIXTURES / f"state-v{VERSION}.json"
    if os.environ.get("HIVEMIND_WRITE_STATE_FIXTURE") == "1":
        FIXTURES.mkdir(exist_ok=True)
        path.write_text(json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n")

    def steady(value):
        """Times and the prefixes IPAM allocated differ from run to run; the rest must not."""
        text = re.sub(r'"20\d\d-[0-9T:.\-]+Z"', '"T"', json.dumps(value, sort_keys=True))
        return re.sub(r'"subnet": "[0-9a-f.:]+/', '"subnet": "S/', text)

    assert steady(json.loads(path.read_text())) == steady(doc)


# -- planning ------------------------------------------------------------------------------
def _by(actions, kind):
    return {a["source"]: a for a in actions if a["kind"] == kind}


def _writes(block) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        result = block()
    writes = [q["sql"] for q in queries if re.match(r"\s*(INSERT|UPDATE|DELETE)", q["sql"], re.I)]
    assert not writes, writes
    return result


def test_plan_into_the_same_tenant_skips_replaces_or_renames(rich_tenant):
    doc = dumps(tenant_state(rich_tenant))
    counts = (Tenant.objects.count(), App.objects.count(), Volume.objects.count(), Network.objects.count())

    skipped = _writes(lambda: plan(doc, into_tenant=rich_tenant))
    assert {a["action"] for a in skipped} == {"skip"}
    assert [a["kind"] for a in skipped[:2]] == ["tenant", "quota"]
    kinds = [a["kind"] for a in skipped]
    assert kinds.index("network") < kinds.index("app") and kinds.index("notifier") < kinds.index("alert_rule")
    assert _by(skipped, "app")["web"]["reason"] == "web exists in the tenant: left as it is"

    replaced = _writes(lambda: plan(doc, into_tenant="shop", conflicts="replace"))
    actions = {(a["kind"], a["source"]): a["action"] for a in replaced}
    assert actions[("app", "web")] == actions[("volume", "data")] == actions[("network", "default")] == "replace"
    assert actions[("member", "alice")] == actions[("notifier", "ops-hook")] == "replace"
    assert [a["action"] for a in replaced if a["kind"] == "silence"] == ["skip"]  # the identical silence is there

    renamed = _writes(lambda: plan(doc, into_tenant=rich_tenant, conflicts="rename"))
    apps_, volumes = _by(renamed, "app"), _by(renamed, "volume")
    assert apps_["web"]["action"] == "create" and apps_["web"]["name"] == "web-restored"
    assert apps_["web"]["reason"] == "web exists in the tenant: created as web-restored"
    web = apps_["web"]["object"]
    assert web["name"] == web["service_name"] == "web-restored"
    assert web["spec"]["networks"] == ["backend-restored"] and web["spec"]["volumes"][0]["volume"] == "data-restored"
    assert all(r["spec"]["networks"] == ["backend-restored"] for r in web["revisions"])
    # The renamed app finds its replicas' template volumes under its new name.
    assert volumes["api-cache-0"]["name"] == "api-restored-cache-0"
    assert volumes["api-cache-0"]["object"]["labels"] == {"app": "api-restored", "template": "cache"}
    assert _by(renamed, "network")["default"]["action"] == "skip"  # one default network per tenant
    rule = _by(renamed, "alert_rule")["failures"]
    assert rule["name"] == "failures-restored" and rule["object"]["notifiers"] == ["ops-hook-restored"]
    assert "secrets to enter again: secret" in _by(renamed, "notifier")["ops-hook"]["warnings"]
    assert counts == (Tenant.objects.count(), App.objects.count(), Volume.objects.count(), Network.objects.count())


def test_plan_into_another_tenant_with_a_name_mapping(rich_tenant):
    doc = tenant_state(rich_tenant)
    VolumeReplica.objects.all().delete()
    StoragePool.objects.filter(name="there").delete()  # the replica's pool is not on this platform
    rename = {"apps": {"web": "storefront", "api": "backend-api"}, "networks": {"backend": "private"},
              "notifiers": {"ops-hook": "pager"}}  # fmt: skip
    actions = _writes(lambda: plan(doc, into_tenant="shop-copy", rename=rename))
    assert all(a["action"] == "create" for a in actions), [a for a in actions if a["action"] != "create"]
    assert actions[0]["kind"] == "tenant" and actions[0]["object"]["slug"] == "shop-copy"
    assert actions[0]["object"]["name"] == "Shop"
    apps_ = _by(actions, "app")
    web = apps_["web"]["object"]
    assert apps_["web"]["name"] == web["name"] == web["service_name"] == "storefront"
    assert web["spec"]["networks"] == ["private"] and web["spec"]["volumes"][0]["volume"] == "data"
    policy = _by(actions, "network_policy")["api-from-web"]["object"]["spec"]
    assert policy["apps"] == ["backend-api"]
    assert policy["ingress"][0]["from"] == [{"app": "storefront"}, {"network": "private"}]
    assert _by(actions, "alert_rule")["failures"]["object"]["notifiers"] == ["pager"]
    volumes = _by(actions, "volume")
    assert volumes["api-cache-0"]["name"] == "backend-api-cache-0"
    assert volumes["data"]["warnings"] == ["no storage pool named there here: the restore must choose another"]
    members = _by(actions, "member")
    assert members["alice"]["action"] == "create" and members["alice"]["object"] == {
        "username": "alice",
        "role": "owner",
    }
    assert not Tenant.objects.filter(slug="shop-copy").exists()

    # Into an existing other tenant: its own names are left alone, the rest created.
    other = tenants.tenant_create(name="Other", slug="other", created_by=None)
    networking.network_create(tenant=other, name="private", actor=None)
    actions = plan(doc, into_tenant=other, rename=rename, conflicts="rename")
    assert _by(actions, "network")["backend"]["name"] == "private-restored"
    assert _by(actions, "app")["web"]["object"]["spec"]["networks"] == ["private-restored"]
    assert _by(actions, "member")["alice"]["action"] == "create"


def test_plan_of_a_platform_document_names_its_tenant(rich_tenant):
    doc = platform_state()
    actions = plan(doc, into_tenant="elsewhere", tenant="shop")
    assert {a["action"] for a in actions} == {"create"}
    with pytest.raises(StateError, match="tenant: a platform document holds every tenant"):
        plan(doc, into_tenant="elsewhere")
    with pytest.raises(StateError, match="tenant: the document has no tenant nope"):
        plan(doc, into_tenant="elsewhere", tenant="nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conflicts": "merge"}, "conflicts: expected one of skip, replace, rename, got 'merge'"),
        ({"rename": {"pods": {}}}, "rename.pods: unknown kind; expected one of"),
        ({"rename": {"apps": {"shop": "x"}}}, "rename.apps.shop: the document has no app named shop"),
        ({"rename": {"apps": {"web": "Web!"}}}, "rename.apps.web: expected a DNS label"),
        ({"rename": {"apps": {"web": "api"}}}, "rename.apps: api and web would both be named api in the target"),
        ({"rename": ["web"]}, "rename: expected {kind: {old name: new name}}"),
        ({"into_tenant": "Not a slug"}, "into_tenant: expected a Tenant or a tenant slug"),
    ],
)
def test_plan_refuses_bad_arguments(rich_tenant, kwargs, message):
    doc = tenant_state(rich_tenant)
    with pytest.raises(StateError) as caught:
        plan(doc, **{"into_tenant": "copy", **kwargs})
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_document_is_documented_field_by_field(db):
    from backups.state.schema import PLATFORM, TENANT_BODY

    text = (Path(__file__).resolve().parents[2] / "docs" / "backup-state.md").read_text()
    for section in [*TENANT_BODY, *PLATFORM, "tenants", "format", "version", "created", "kind"]:
        assert f"`{section}`" in text, section
