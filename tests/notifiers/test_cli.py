"""`hivemind notifier` as subprocesses against the real web process: create (a secret typed on
standard input, never echoed back), ls, info with the deliveries, test against a real receiver,
update, the refusals with their exit codes, rm."""

from __future__ import annotations

import json

from notifiers.kinds.webhook import signature
from notifiers.models import Notifier
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)
from tests.notifiers.test_kinds import SECRET


def test_notifiers_from_create_to_rm(cli, web_server, world, receiver):  # noqa: F811
    login_as(cli, web_server, world, "operator")
    made = cli("notifier", "create", "ops-hook", "--kind", "webhook", "--set", f"url={receiver.url}/hook",
               "--secret", "secret", input=SECRET + "\n")  # fmt: skip
    assert made.code == 0, made
    assert "Created webhook notifier ops-hook in tenant tenant-a." in made.out
    notifier = Notifier.objects.get(name="ops-hook")
    assert notifier.secret_names == ["secret"] and SECRET.encode() not in bytes(notifier.sealed_secrets)

    listed = cli("notifier", "ls")
    row = listed.out.splitlines()[1].split()
    assert listed.code == 0 and row[:4] == ["ops-hook", "webhook", f"{receiver.url}/hook", "secret"], listed
    shown = cli("notifier", "info", "ops-hook", "-o", "json")
    assert json.loads(shown.out)["secrets_set"] == ["secret"] and SECRET not in shown.out

    tested = cli("notifier", "test", "ops-hook")
    assert tested.code == 0, tested
    assert "Notifier ops-hook took the test notification: 200 OK: ok" in tested.out
    (request,) = receiver.wait(1)
    assert request.json()["rule"]["name"] == "hivemind-test"
    # Signed with the secret typed on standard input: it was sealed and opened intact.
    timestamp = request.headers["X-Hivemind-Timestamp"]
    assert request.headers["X-Hivemind-Signature"] == signature(SECRET, timestamp, request.body)
    receiver.status, receiver.answer = 503, b"come back later"
    refused = cli("notifier", "test", "ops-hook")
    assert refused.code == 1 and "answered 503 Service Unavailable: come back later" in one_error_line(refused)

    bad = cli("notifier", "create", "ftp", "--kind", "webhook", "--set", "url=ftp://example.com/x", "--secret",
              f"secret={SECRET}")  # fmt: skip
    assert bad.code == 1 and "config: url: expected an http:// or https:// URL" in one_error_line(bad), bad
    taken = cli("notifier", "create", "ops-hook", "--kind", "slack", "--secret", "url=https://chat.example.com/h")
    assert taken.code == 7, taken
    assert cli("notifier", "update", "ops-hook").code == 2

    updated = cli("notifier", "update", "ops-hook", "--set", "url=https://hooks.example.com/new", "--rename", "hook2")
    assert updated.code == 0, updated
    assert Notifier.objects.get(pk=notifier.pk).config == {"url": "https://hooks.example.com/new"}
    info = cli("notifier", "info", "hook2")
    assert info.code == 0 and "Secrets set:" in info.out and "https://hooks.example.com/new" in info.out, info
    assert SECRET not in info.out

    viewer = login_as(cli, web_server, world, "viewer")
    assert viewer
    assert cli("notifier", "ls").code == 0
    assert cli("notifier", "rm", "hook2", "--yes").code == 5
    login_as(cli, web_server, world, "operator")
    assert cli("notifier", "rm", "hook2", "--yes").code == 0
    assert not Notifier.objects.filter(pk=notifier.pk).exists()
    assert cli("notifier", "info", "hook2").code == 6
