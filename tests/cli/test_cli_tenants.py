"""The `hivemind` command against a live server: login, contexts, tenants and members."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import yaml
from django.contrib.auth import get_user_model

from tenants import services
from tests.cli.conftest import one_error_line

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class World:
    server: str
    tokens: dict[str, str]  # username -> plain API token
    acme: object


@pytest.fixture
def world(live_server) -> World:
    """Staff `root`; tenant acme owned by alice; bob and carol in no tenant yet."""
    users = get_user_model().objects
    root = users.create_user("root", is_staff=True)
    alice, bob = users.create_user("alice"), users.create_user("bob")
    users.create_user("carol")
    acme = services.tenant_create(name="Acme Corp", slug="acme", created_by=root, labels={"team": "infra"})
    services.membership_add(tenant=acme, user=alice, role="owner", actor=root)
    tokens = {user.username: services.api_token_create(user=user, name="cli")[1] for user in (root, alice, bob)}
    return World(server=live_server.url, tokens=tokens, acme=acme)


def login(cli, world: World, who: str, *extra: str):
    result = cli("login", "--server", world.server, "--token", world.tokens[who], *extra)
    assert result.code == 0, result
    return result


def test_login_saves_a_private_context_with_the_only_tenant(cli, world):
    result = login(cli, world, "alice")
    assert "as alice" in result.out
    assert "Tenant: acme (role owner)" in result.out

    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config.parent.stat().st_mode) == 0o700
    name = urlsplit(world.server).netloc  # the host, with the live server's port
    assert cli.saved() == {
        "current-context": name,
        "contexts": {name: {"server": world.server, "token": world.tokens["alice"], "tenant": "acme"}},
    }


def test_login_token_from_environment_and_prompt(cli, world):
    result = cli("login", "--server", world.server, "--context", "ops", env={"HIVEMIND_TOKEN": world.tokens["root"]})
    assert result.code == 0, result
    assert "as root (staff)" in result.out
    assert "Tenant: acme" in result.out  # staff in no tenant, on a platform of one: that one
    assert cli.saved()["contexts"]["ops"]["tenant"] == "acme"

    # No --token and no HIVEMIND_TOKEN, and stdin is no terminal: the token is read from it.
    result = cli("login", "--server", world.server, input=world.tokens["bob"] + "\n")
    assert result.code == 0, result
    assert "as bob" in result.out
    assert world.tokens["bob"] not in result.out + result.err
    assert result.err == ""
    saved = cli.saved()
    assert saved["current-context"] == urlsplit(world.server).netloc
    assert set(saved["contexts"]) == {"ops", urlsplit(world.server).netloc}


def test_wrong_token_exits_4_and_saves_nothing(cli, world):
    result = cli("login", "--server", world.server, "--token", "hm_not-a-real-token")
    assert result.code == 4, result
    assert one_error_line(result) == "invalid token"
    assert not cli.config.exists()


def test_context_use_ls_and_show(cli, world):
    login(cli, world, "root", "--context", "ops")
    result = cli("context", "use", "acme")
    assert result.code == 0, result
    assert cli.saved()["contexts"]["ops"]["tenant"] == "acme"

    missing = cli("context", "use", "nope")
    assert missing.code == 6, missing
    assert one_error_line(missing) == "tenant nope not found"
    assert cli.saved()["contexts"]["ops"]["tenant"] == "acme"

    table = cli("context", "ls").out.splitlines()
    assert table[0].split() == ["CURRENT", "NAME", "SERVER", "TENANT"]
    assert table[1].split() == ["*", "ops", world.server, "acme"]

    shown = json.loads(cli("context", "show", "-o", "json").out)
    assert shown == {"name": "ops", "server": world.server, "tenant": "acme", "current": True}
    text = cli("context", "show").out
    assert world.tokens["root"] not in text
    assert "****" + world.tokens["root"][-4:] in text

    assert cli("context", "use", "--none").code == 0
    assert cli.saved()["contexts"]["ops"]["tenant"] is None


def test_tenant_ls_info_usage_in_every_format(cli, world):
    login(cli, world, "alice")

    table = cli("tenant", "ls")
    assert table.code == 0, table
    header, *rows = table.out.splitlines()
    assert header.split() == ["SLUG", "NAME", "STATUS", "ISOLATION", "MY", "ROLE", "LABELS", "CREATED"]
    assert [row.split()[0] for row in rows] == ["acme"]  # alice sees her tenant only
    assert rows[0].index("active") == header.index("STATUS")  # columns line up
    assert "team=infra" in rows[0]

    listed = json.loads(cli("tenant", "ls", "-o", "json").out)
    assert [(t["slug"], t["my_role"], t["labels"]) for t in listed] == [("acme", "owner", {"team": "infra"})]
    assert yaml.safe_load(cli("tenant", "ls", "-o", "yaml").out) == listed

    info = cli("tenant", "info")  # the context's tenant
    assert info.code == 0, info
    assert "Slug:" in info.out
    assert "acme" in info.out
    assert "soft" in info.out
    assert json.loads(cli("tenant", "info", "acme", "-o", "json").out) == listed[0]
    assert yaml.safe_load(cli("tenant", "info", "-o", "yaml").out) == listed[0]

    usage = cli("tenant", "usage")
    assert usage.code == 0, usage
    header, *rows = usage.out.splitlines()
    assert header.split() == ["RESOURCE", "USED", "LIMIT", "USE%", "NOTE"]
    by_name = {row.split()[0]: row.split()[1:] for row in rows}
    assert by_name["cpu"] == ["0", "cores", "8", "cores", "0.0%"]
    assert by_name["memory"] == ["0", "B", "16.0", "GiB", "0.0%"]
    figures = json.loads(cli("tenant", "usage", "-o", "json").out)
    assert figures["tenant"] == "acme"
    assert figures["resources"]["cpu"] == {
        "limit": 8000,
        "used": 0,
        "unit": "millicores",
        "percent": 0.0,
        "warning": False,
    }
    assert yaml.safe_load(cli("tenant", "usage", "acme", "-o", "yaml").out) == figures

    unknown = cli("tenant", "info", "nope")
    assert unknown.code == 6, unknown
    assert one_error_line(unknown) == "tenant nope not found"


def test_tenant_ls_follows_pagination(cli, world):
    root = get_user_model().objects.get(username="root")
    for i in range(55):  # the API pages by 50
        services.tenant_create(name=f"Edge {i}", slug=f"edge-{i:02d}", created_by=root)
    login(cli, world, "root")
    slugs = [t["slug"] for t in json.loads(cli("tenant", "ls", "-o", "json").out)]
    assert len(slugs) == len(set(slugs))
    assert {"acme", *(f"edge-{i:02d}" for i in range(55))} <= set(slugs)


def test_create_is_for_staff(cli, world):
    login(cli, world, "root")
    result = cli(
        "tenant", "create", "Globex", "--slug", "globex", "--description", "Globex Inc.",
        "--isolation", "hard", "--label", "tier=gold", "--label", "region=eu", "-o", "json",
    )  # fmt: skip
    assert result.code == 0, result
    created = json.loads(result.out)
    assert (created["slug"], created["name"], created["description"]) == ("globex", "Globex", "Globex Inc.")
    assert (created["isolation_level"], created["labels"]) == ("hard", {"tier": "gold", "region": "eu"})

    again = cli("tenant", "create", "Globex", "--slug", "globex")
    assert again.code == 1, again
    assert one_error_line(again) == "slug: tenant with this slug already exists."

    login(cli, world, "alice")
    refused = cli("tenant", "create", "Initech", "--slug", "initech")
    assert refused.code == 5, refused
    assert one_error_line(refused) == "only platform staff may create tenants"


def test_members_add_ls_rm(cli, world):
    login(cli, world, "alice")
    added = cli("tenant", "member", "add", "bob", "--role", "viewer")
    assert added.code == 0, added
    assert added.out.strip() == "Added bob to tenant acme as viewer."

    members = json.loads(cli("tenant", "member", "ls", "-o", "json").out)
    assert sorted((m["user"], m["role"], m["tenant"]) for m in members) == [
        ("alice", "owner", "acme"),
        ("bob", "viewer", "acme"),
    ]
    table = cli("tenant", "member", "ls", "--tenant", "acme").out.splitlines()
    assert table[0].split() == ["USER", "ROLE", "SINCE"]
    assert [row.split()[:2] for row in table[1:]] == [["alice", "owner"], ["bob", "viewer"]]
    assert yaml.safe_load(cli("tenant", "member", "ls", "-o", "yaml").out) == members

    twice = cli("tenant", "member", "add", "bob", "--role", "admin")
    assert twice.code == 1, twice
    assert one_error_line(twice) == "user: bob is already a member of acme"

    removed = cli("tenant", "member", "rm", "bob")
    assert removed.code == 0, removed
    assert [m["user"] for m in json.loads(cli("tenant", "member", "ls", "-o", "json").out)] == ["alice"]

    not_member = cli("tenant", "member", "rm", "carol")
    assert not_member.code == 6, not_member
    assert one_error_line(not_member) == "carol is not a member of tenant acme"

    last_owner = cli("tenant", "member", "rm", "alice")
    assert last_owner.code == 7, last_owner
    assert "last owner" in one_error_line(last_owner)

    # bob is no member any more: acme is invisible to him, so it is "not found".
    login(cli, world, "bob")
    hidden = cli("tenant", "member", "ls", "--tenant", "acme")
    assert hidden.code == 6, hidden
    assert one_error_line(hidden) == "tenant acme not found"


def test_suspend_and_resume(cli, world):
    login(cli, world, "root")
    suspended = cli("tenant", "suspend", "acme")
    assert suspended.code == 0, suspended
    assert suspended.out.strip() == "Tenant acme is now suspended."
    assert json.loads(cli("tenant", "info", "acme", "-o", "json").out)["status"] == "suspended"
    resumed = cli("tenant", "resume", "acme", "-o", "json")
    assert json.loads(resumed.out)["status"] == "active"

    login(cli, world, "alice")
    refused = cli("tenant", "suspend", "acme")
    assert refused.code == 5, refused
    assert one_error_line(refused) == "only platform staff may suspend a tenant"


def test_delete(cli, world):
    root = get_user_model().objects.get(username="root")
    services.tenant_create(name="Empty", slug="empty", created_by=root)
    services.tenant_create(name="Typed", slug="typed", created_by=root)
    login(cli, world, "root")

    assert cli("context", "use", "empty").code == 0
    deleted = cli("tenant", "delete", "empty", "--yes")
    assert deleted.code == 0, deleted
    assert "Deleted tenant empty." in deleted.out
    assert next(iter(cli.saved()["contexts"].values()))["tenant"] is None  # it no longer points at a ghost
    assert cli("tenant", "info", "empty").code == 6

    typed = cli("tenant", "delete", "typed", input="typed\n")
    assert typed.code == 0, typed
    assert cli("tenant", "info", "typed").code == 6


def test_delete_of_a_tenant_that_still_owns_something_exits_7(cli, world):
    root = get_user_model().objects.get(username="root")
    services.service_account_create(tenant=world.acme, name="deployer", role="operator", actor=root)
    login(cli, world, "alice")
    result = cli("tenant", "delete", "acme", "--yes")
    assert result.code == 7, result
    message = one_error_line(result)
    assert message.startswith("tenant acme still owns: 1 service accounts"), message
    assert json.loads(cli("tenant", "info", "acme", "-o", "json").out)["slug"] == "acme"


def test_a_viewer_may_not_delete(cli, world):
    users = get_user_model().objects
    services.membership_add(
        tenant=world.acme, user=users.get(username="bob"), role="viewer", actor=users.get(username="root")
    )
    login(cli, world, "bob")
    result = cli("tenant", "delete", "acme", "--yes")
    assert result.code == 5, result
    assert one_error_line(result) == "your role in acme may not delete it"


def test_health_names_what_is_down_and_exits_1(cli, live_server, settings):
    # Point this node at a Docker socket that does not exist (the live server runs in-process).
    settings.DOCKER_HOST = "unix:///nonexistent/hivemind-test/docker.sock"
    result = cli("--server", live_server.url, "health", "-o", "json")
    assert result.code == 1, result
    body = json.loads(result.out)
    assert body["status"] == "down"
    assert body["docker"][settings.NODE_NAME]["status"] == "down"
    table = cli("--server", live_server.url, "health")
    assert table.code == 1, table
    assert table.out.splitlines()[0].split() == ["PART", "STATUS", "DETAIL"]
    assert f"docker ({settings.NODE_NAME})" in table.out
