"""`hivemind backup location` as subprocesses against the real web process: add (checked at
once), ls, info, a failing check with the server's reason, update, the refusals with their
exit codes, rm."""

from __future__ import annotations

import json
from pathlib import Path

from backups.models import BackupLocation
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)


def test_locations_from_add_to_rm(cli, web_server, world):  # noqa: F811
    login_as(cli, web_server, world, "operator")
    added = cli("backup", "location", "add", "nightly", "--kind", "local", "--set", "path=nightly")
    assert added.code == 0, added
    root = Path(BackupLocation.objects.get(name="nightly").config["path"]).parent  # the web process's var dir
    assert root.name == world.a.slug and root.parent.name == "backups"
    assert f"Added local backup location nightly in tenant tenant-a: {root / 'nightly'}." in added.out
    assert "reachable and writable" in added.out and (root / "nightly").is_dir()
    assert BackupLocation.objects.get(name="nightly").check_state == "ok"

    listed = cli("backup", "location", "ls")
    row = listed.out.splitlines()[1].split()
    assert listed.code == 0 and row[:5] == ["nightly", "local", str(root / "nightly"), "-", "ok"], listed
    shown = json.loads(cli("backup", "location", "info", "nightly", "-o", "json").out)
    assert shown["config"] == {"path": str(root / "nightly")} and shown["secrets_set"] == []

    (root / "blocked").write_text("a file where the directory should be")
    blocked = cli("backup", "location", "add", "blocked", "--kind", "local", "--set", "path=blocked")
    assert blocked.code == 1 and "cannot make the directory: File exists" in one_error_line(blocked), blocked
    info = cli("backup", "location", "info", "blocked")
    assert "failed" in info.out and "File exists" in info.out, info

    escape = cli("backup", "location", "add", "escape", "--kind", "local", "--set", "path=/etc")
    assert escape.code == 1 and "config: path:" in one_error_line(escape), escape
    taken = cli("backup", "location", "add", "nightly", "--kind", "local", "--set", "path=other", "--no-check")
    assert taken.code == 7, taken
    assert cli("backup", "location", "update", "nightly").code == 2

    moved = cli("backup", "location", "update", "blocked", "--set", "path=fixed", "--rename", "fixed")
    assert moved.code == 0, moved
    assert BackupLocation.objects.get(name="fixed").check_state == "unknown"  # its settings changed
    checked = cli("backup", "location", "check", "fixed")
    assert checked.code == 0 and "reachable and writable" in checked.out, checked

    login_as(cli, web_server, world, "viewer")
    assert cli("backup", "location", "ls").code == 0
    assert cli("backup", "location", "check", "fixed").code == 5
    login_as(cli, web_server, world, "operator")
    assert cli("backup", "location", "rm", "fixed", "--yes").code == 0
    assert cli("backup", "location", "info", "fixed").code == 6


def test_platform_locations_with_platform(cli, web_server, world):  # noqa: F811
    """Staff add, list, show and remove platform locations with --platform; a tenant's policy
    backs up into one by name; anyone else is refused the platform's list."""
    login_as(cli, web_server, world, "staff")
    added = cli("backup", "location", "add", "shared", "--platform", "--kind", "local", "--set", "path=shared")
    assert added.code == 0, added
    path = BackupLocation.objects.get(name="shared", tenant=None).config["path"]
    assert f"Added local backup location shared in the platform: {path}." in added.out and path.endswith(
        "/backups/_platform/shared")  # fmt: skip
    listed = cli("backup", "location", "ls", "--platform")
    assert listed.code == 0 and listed.out.splitlines()[1].split()[:2] == ["shared", "local"], listed
    assert cli("backup", "location", "ls", "--platform", "--tenant", "tenant-a").code == 2
    assert cli("backup", "location", "info", "nope", "--platform").code == 6

    login_as(cli, web_server, world, "operator")
    made = cli("backup", "policy", "create", "nightly", "--location", "shared", "--keep-last", "3")
    assert made.code == 0, made
    refused = cli("backup", "location", "ls", "--platform")
    assert refused.code == 5 and "only platform staff" in one_error_line(refused), refused

    login_as(cli, web_server, world, "staff")
    shown = cli("backup", "location", "info", "shared", "--platform")
    assert shown.code == 0 and "Tenants" in shown.out and "tenant-a" in shown.out, shown
    used = cli("backup", "location", "rm", "shared", "--platform", "--yes")
    assert used.code == 7 and "used by policies tenant-a/nightly" in one_error_line(used), used
    assert cli("backup", "policy", "rm", "nightly", "--tenant", "tenant-a", "--yes").code == 0
    gone = cli("backup", "location", "rm", "shared", "--platform", "--yes")
    assert gone.code == 0 and "Removed backup location shared from the platform." in gone.out, gone
