"""`hivemind login` with a password and `hivemind user`, run as real processes against the
real web process (gunicorn, `web_server`): the first token without tricks, and users."""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
import time
from datetime import timedelta

import pytest
import requests
from django.contrib.auth import get_user_model
from django.utils import timezone

from tenants import services
from tenants.models import ApiToken, AuditEvent
from tests.cli.conftest import Cli, one_error_line
from tests.tenants.conftest import forget_login_counts

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
GENERATED = re.compile(r"^Password for (\S+) \(shown once, pass it on safely\): (\S+)$", re.MULTILINE)


@pytest.fixture
def server(web_server):
    """Staff `root` and tenant acme owned by alice, both with PASSWORD; the gunicorn's URL."""
    forget_login_counts()
    users = get_user_model().objects
    root = users.create_user("root", password=PASSWORD, is_staff=True)
    alice = users.create_user("alice", password=PASSWORD)
    acme = services.tenant_create(name="Acme Corp", slug="acme", created_by=root)
    services.membership_add(tenant=acme, user=alice, role="owner", actor=root)
    yield web_server
    forget_login_counts()


def password_login(cli: Cli, server: str, username: str, password: str = PASSWORD, *extra: str):
    return cli("login", "--server", server, "--username", username, "--password-stdin", *extra, input=password + "\n")


def test_login_with_password_stdin_makes_a_token_for_this_machine(cli, server):
    result = password_login(cli, server, "alice")
    assert result.code == 0, result
    assert "as alice" in result.out and "Tenant: acme (role owner)" in result.out
    assert PASSWORD not in result.out + result.err
    saved = cli.saved()
    token = saved["contexts"][saved["current-context"]]["token"]
    row = ApiToken.objects.get(digest=ApiToken.digest_of(token))
    assert row.user.username == "alice" and row.name == f"cli@{socket.gethostname()}"
    assert timedelta(days=29, hours=23) < row.expires_at - timezone.now() <= timedelta(days=30)
    assert cli("tenant", "ls").code == 0  # the token works
    assert AuditEvent.objects.filter(action="auth.login", actor_name="alice").count() == 1

    # A shorter life on request; the token login (--token) keeps working as before.
    again = password_login(cli, server, "alice", PASSWORD, "--expires-in-days", "7", "--context", "short")
    assert again.code == 0, again
    short = ApiToken.objects.filter(user__username="alice").order_by("-created_at").first()
    assert timedelta(days=6, hours=23) < short.expires_at - timezone.now() <= timedelta(days=7)
    other = Cli(cli.config.parent.parent.parent / "other-home")
    by_token = other("login", "--server", server, "--token", token)
    assert by_token.code == 0, by_token
    assert "as alice" in by_token.out


def test_a_staff_login_on_a_platform_of_one_tenant_works_in_it(cli, server):
    result = password_login(cli, server, "root")  # root is no member of acme, the only tenant
    assert result.code == 0, result
    assert "as root (staff)" in result.out
    assert "Tenant: acme" in result.out  # as a fresh install's `default`: nothing to pick
    services.tenant_create(name="Other", slug="other", created_by=None)
    again = password_login(cli, server, "root", PASSWORD, "--context", "two")
    assert "You belong to no tenant; as staff, pick any with `hivemind context use <tenant>`." in again.out
    assert cli.saved()["contexts"]["two"]["tenant"] is None


def test_wrong_credentials_exit_4_and_too_many_answer_429(cli, server):
    for username, password in [("alice", "wrong"), ("nobody", PASSWORD)]:
        result = password_login(cli, server, username, password)
        assert result.code == 4, result
        assert one_error_line(result) == "wrong user name or password"
    assert not cli.config.exists()
    # The web process counts in Redis: 10 a minute per user name, then 429 with Retry-After.
    url = f"{server}/api/v1/auth/login/"
    for _ in range(9):  # the CLI's wrong password above was the first
        response = requests.post(url, json={"username": "alice", "password": "x"}, timeout=10)
        assert response.status_code == 401
    response = requests.post(url, json={"username": "alice", "password": PASSWORD}, timeout=10)
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    result = password_login(cli, server, "alice")
    assert result.code == 1, result
    assert one_error_line(result).endswith("(too many login attempts)")
    assert not cli.config.exists()


def _answer_prompts(argv: list[str], env: dict, answers: list[tuple[str, str]], timeout: float = 60) -> tuple[int, str]:
    """Run `argv` on a new pseudo-terminal, as a person at a shell: type each answer after its
    prompt appears. Returns the exit code and everything the terminal showed."""
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True, close_fds=True
    )
    os.close(terminal)
    shown, todo = b"", list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # EIO: the program ended and its terminal is drained
                    break
                if not chunk:
                    break
                shown += chunk
            if todo and todo[0][0].encode() in shown.split(b"\n")[-1]:
                os.write(main, todo.pop(0)[1].encode() + b"\n")
            if process.poll() is not None and not ready:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)
    return code, shown.decode(errors="replace")


def test_login_asks_for_name_and_password_on_a_terminal(cli, server):
    code, shown = _answer_prompts(
        [cli.executable, "login", "--server", server],
        cli.env,
        [(f"Username for {server}:", "alice"), ("Password:", PASSWORD)],
    )
    assert code == 0, shown
    shown = re.sub(r"\x1b\[[0-9;]*m", "", shown)  # bold, on a terminal
    assert f"Username for {server}: alice" in shown
    assert "Logged in to" in shown and "as alice" in shown
    assert PASSWORD not in shown  # never echoed
    assert cli.saved()["contexts"][cli.saved()["current-context"]]["tenant"] == "acme"

    # With --username only the password is asked.
    code, shown = _answer_prompts(
        [cli.executable, "login", "--server", server, "--username", "root", "--context", "ops"],
        cli.env,
        [("Password:", "wrong password")],
    )
    assert code == 4, shown
    assert "error: wrong user name or password" in shown and "Traceback" not in shown


def test_staff_manage_users_and_an_owner_adds_one_to_a_tenant(cli, server, tmp_path):
    assert password_login(cli, server, "root").code == 0

    created = cli("user", "create", "bob", "--email", "bob@example.com")
    assert created.code == 0, created
    assert created.out.startswith("Created user bob.")
    name, bob_password = GENERATED.search(created.out).groups()
    assert name == "bob" and len(bob_password) >= 16

    # alice (owner of acme) adds bob by name; bob logs in with the printed password.
    alice = Cli(tmp_path / "alice")
    assert password_login(alice, server, "alice").code == 0
    added = alice("tenant", "member", "add", "bob", "--role", "operator", "--tenant", "acme")
    assert added.code == 0, added
    bob = Cli(tmp_path / "bob")
    logged = password_login(bob, server, "bob", bob_password)
    assert logged.code == 0, logged
    assert "Tenant: acme (role operator)" in logged.out

    table = cli("user", "ls")
    assert table.code == 0, table
    header, *rows = table.out.splitlines()
    assert header.split() == ["USERNAME", "STATE", "STAFF", "EMAIL", "TENANTS", "LAST", "LOGIN", "JOINED"]
    bob_row = next(row for row in rows if row.startswith("bob "))
    assert bob_row.split()[:5] == ["bob", "active", "no", "bob@example.com", "acme:operator"]
    listed = cli("user", "ls", "--search", "bo", "-o", "json")
    assert [u["username"] for u in __import__("json").loads(listed.out)] == ["bob"]

    # A password of one's own through stdin; the validators' message names the field.
    weak = cli("user", "passwd", "bob", "--password-stdin", input="short\n")
    assert weak.code == 1, weak
    assert one_error_line(weak) == "password: This password is too short. It must contain at least 8 characters."
    given = cli("user", "passwd", "bob", "--password-stdin", input="a brand new passphrase\n")
    assert given.code == 0 and given.out == "Password of bob changed.\n", given
    generated = cli("user", "passwd", "bob")
    assert generated.code == 0, generated
    _, new_password = GENERATED.search(generated.out).groups()
    assert password_login(Cli(tmp_path / "bob2"), server, "bob", "a brand new passphrase").code == 4
    assert password_login(Cli(tmp_path / "bob3"), server, "bob", new_password).code == 0

    # Deactivated: bob's saved token stops working at once, and so do his logins.
    off = cli("user", "deactivate", "bob")
    assert off.code == 0 and "Deactivated bob" in off.out, off
    refused = bob("tenant", "ls")
    assert refused.code == 4, refused
    assert one_error_line(refused) == "the token's user is inactive"
    assert password_login(Cli(tmp_path / "bob4"), server, "bob", new_password).code == 4
    inactive = cli("user", "ls", "--inactive", "-o", "yaml")
    assert "username: bob" in inactive.out and "is_active: false" in inactive.out
    assert cli("user", "activate", "bob").code == 0
    assert bob("tenant", "ls").code == 0


def test_user_errors_are_one_line_with_the_right_exit_code(cli, server, tmp_path):
    assert password_login(cli, server, "root").code == 0
    bad = cli("user", "create", "bob smith")
    assert bad.code == 1, bad
    assert one_error_line(bad).startswith("username: Enter a valid username.")
    taken = cli("user", "create", "ALICE")
    assert taken.code == 1 and one_error_line(taken) == "username: a user named ALICE already exists", taken
    assert cli("user", "create").code == 2  # the name is missing
    empty = cli("user", "create", "dave", "--password-stdin", input="")
    assert empty.code == 2 and one_error_line(empty) == "--password-stdin: stdin was empty", empty
    missing = cli("user", "deactivate", "nobody")
    assert missing.code == 6 and one_error_line(missing) == "user nobody not found", missing
    itself = cli("user", "deactivate", "root")
    assert itself.code == 7 and one_error_line(itself) == "you cannot deactivate yourself", itself

    alice = Cli(tmp_path / "alice")
    assert password_login(alice, server, "alice").code == 0
    listing = alice("user", "ls")
    assert listing.code == 5 and one_error_line(listing) == "only platform staff may list or create users", listing
    assert alice("user", "create", "mallory").code == 5
    hidden = alice("user", "passwd", "root")
    assert hidden.code == 6 and one_error_line(hidden) == "user root not found", hidden
    assert get_user_model().objects.get(username="root").check_password(PASSWORD)
