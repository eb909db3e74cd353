"""`hivemind user`: people's accounts. Platform staff create and list them, set their passwords
and deactivate them; a tenant's owners and admins then add them (`hivemind tenant member add`)."""

from __future__ import annotations

import sys

import click

from hivemind.cli.client import api_path
from hivemind.cli.errors import not_found_as, usage_error
from hivemind.cli.output import examples, output_option, print_data, print_table, status_style, style, when
from hivemind.cli.session import Session, pass_session

password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from stdin (for scripts) [default: the server generates one, printed once].",
)


def read_password_stdin() -> str:
    """The password piped in (`pass show hivemind | hivemind login ... --password-stdin`):
    everything on stdin but the final line break. `login` and `user` both read it so."""
    if sys.stdin.isatty():
        raise usage_error("--password-stdin: stdin is a terminal; pipe the password in, or leave the flag out")
    password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not password:
        raise usage_error("--password-stdin: stdin was empty")
    return password


def _show_generated(username: str, password: str | None) -> None:
    if password:
        click.echo(f"Password for {username} (shown once, pass it on safely): {style(password, bold=True)}")


def _tenants_text(user: dict) -> str:
    return ",".join(f"{m['tenant']}:{m['role']}" for m in user.get("memberships") or []) or "-"


@click.group(
    epilog=examples(
        "hivemind user create bob --email bob@example.com",
        "hivemind user ls",
        "hivemind tenant member add bob --role operator --tenant acme",
    )
)
def user() -> None:
    """People's accounts (platform staff only): create, list, passwords, deactivate."""


@user.command("ls", epilog=examples("hivemind user ls", "hivemind user ls --inactive", "hivemind user ls -o json"))
@click.option("--search", metavar="TEXT", help="Only users whose name or e-mail address contains TEXT.")
@click.option("--active/--inactive", "active", default=None, help="Only active, or only deactivated, users.")
@output_option
@pass_session
def user_ls(session: Session, search: str | None, active: bool | None, output: str) -> None:
    """List users (service accounts are listed per tenant, not here)."""
    params = {}
    if search:
        params["search"] = search
    if active is not None:
        params["is_active"] = "true" if active else "false"
    users = session.client().list_all(api_path("users"), params)
    if output != "table":
        print_data(users, output)
        return
    rows = [
        (
            u["username"],
            "active" if u.get("is_active") else "inactive",
            "yes" if u.get("is_staff") else "no",
            u.get("email") or "-",
            _tenants_text(u),
            when(u.get("last_login")),
            when(u.get("date_joined")),
        )
        for u in users
    ]
    print_table(
        ("USERNAME", "STATE", "STAFF", "EMAIL", "TENANTS", "LAST LOGIN", "JOINED"),
        rows,
        styles={1: lambda text: status_style("suspended" if text == "inactive" else text)},
        empty="No users.",
    )


@user.command(
    "create",
    epilog=examples(
        "hivemind user create bob",
        "hivemind user create carol --email carol@example.com --staff",
        "hivemind user create ci-bot --password-stdin < ci-bot-password.txt",
    ),
)
@click.argument("username")
@click.option("--email", default="", help="The user's e-mail address.")
@click.option("--staff", is_flag=True, help="Make the user platform staff (sees and does everything).")
@password_stdin_option
@output_option
@pass_session
def user_create(session: Session, username: str, email: str, staff: bool, password_stdin: bool, output: str) -> None:
    """Create a user. Without --password-stdin the server generates a password, printed once.

    The user then logs in with `hivemind login --server URL --username USERNAME`.
    """
    body: dict = {"username": username, "email": email, "is_staff": staff}
    if password_stdin:
        body["password"] = read_password_stdin()
    created = session.client().post(api_path("users"), body)
    if output != "table":
        print_data(created, output)
        return
    click.echo(f"Created user {style(created.get('username', username), bold=True)}" + (" (staff)." if staff else "."))
    _show_generated(username, created.get("generated_password"))


@user.command(
    "passwd",
    epilog=examples("hivemind user passwd bob", "hivemind user passwd bob --password-stdin < new-password.txt"),
)
@click.argument("username")
@password_stdin_option
@pass_session
def user_passwd(session: Session, username: str, password_stdin: bool) -> None:
    """Set a user's password; without --password-stdin a new one is generated and printed once.

    The user's API tokens keep working: deactivate the user to shut every door at once.
    """
    body = {"password": read_password_stdin()} if password_stdin else {}
    with not_found_as(f"user {username}"):
        answer = session.client().post(api_path("users", username, "password"), body)
    click.echo(f"Password of {username} changed.")
    _show_generated(username, (answer or {}).get("generated_password"))


def _set_active(session: Session, username: str, action: str) -> dict:
    with not_found_as(f"user {username}"):
        return session.client().post(api_path("users", username, action))


@user.command("deactivate", epilog=examples("hivemind user deactivate bob"))
@click.argument("username")
@pass_session
def user_deactivate(session: Session, username: str) -> None:
    """Deactivate a user: their logins are refused and their tokens stop working at once."""
    _set_active(session, username, "deactivate")
    click.echo(f"Deactivated {username}: their logins and tokens are refused.")


@user.command("activate", epilog=examples("hivemind user activate bob"))
@click.argument("username")
@pass_session
def user_activate(session: Session, username: str) -> None:
    """Let a deactivated user in again (their unexpired, unrevoked tokens work again)."""
    _set_active(session, username, "activate")
    click.echo(f"Activated {username}.")
