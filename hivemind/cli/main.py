"""The `hivemind` command line. It talks to the REST API only, never to the database."""

from __future__ import annotations

import socket
import sys

import click
import requests

from hivemind import __version__
from hivemind.cli import (
    alerts,
    apps,
    backups,
    contexts,
    networks,
    nodes,
    notifiers,
    observability,
    policies,
    tenants,
    users,
    volumes,
    workflows,
)
from hivemind.cli.client import ApiClient, api_path, check_server_url, server_host
from hivemind.cli.completion import PROG_NAME, completion
from hivemind.cli.config import Context, save_config
from hivemind.cli.errors import EXIT_CONNECTION, EXIT_ERROR, EXIT_MEANINGS, ApiError, CliError, usage_error
from hivemind.cli.output import examples, output_option, print_data, print_table, status_style, style
from hivemind.cli.session import Session, pass_session

ROOT_EPILOG = (
    "\b\nSettings are kept in ~/.config/hivemind/config.yaml (or $HIVEMIND_CONFIG), mode 0600.\n"
    "Colour only on a terminal, never with NO_COLOR set. Completion: hivemind completion --help.\n"
    "\b\nExit codes:\n"
    + "".join(f"  {code}  {meaning}\n" for code, meaning in EXIT_MEANINGS.items())
    + "\n"
    + examples(
        "hivemind login --server https://hivemind.example.com --username alice",
        "hivemind context use acme",
        "hivemind tenant usage",
        "hivemind --server http://10.0.0.5:8000 health",
    )
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=ROOT_EPILOG)
@click.version_option(__version__, prog_name=PROG_NAME)
@click.option(
    "--server",
    envvar="HIVEMIND_SERVER",
    show_envvar=True,
    metavar="URL",
    help="Base URL of the Hivemind API [default: the context's server, else http://127.0.0.1:8000].",
)
@click.option(
    "--token",
    envvar="HIVEMIND_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="API token [default: the context's token].",
)
@click.option(
    "--context",
    "context_name",
    envvar="HIVEMIND_CONTEXT",
    show_envvar=True,
    metavar="NAME",
    help="Use this saved context.",
)
@click.pass_context
def cli(ctx: click.Context, server: str | None, token: str | None, context_name: str | None) -> None:
    """Hivemind: run containers on small clusters and edge sites."""
    if server:
        check_server_url(server)
    ctx.obj = Session(server_option=server, token_option=token, context_option=context_name)


@cli.command(epilog=examples("hivemind health -o json"))
@output_option
@pass_session
def health(session: Session, output: str) -> None:
    """Show whether the database, the broker and each node's Docker answer.

    Exits 0 when every part is up, 1 when one is down, 3 when the server cannot be reached.
    """
    server = session.server()
    url = server + api_path("health")
    try:
        response = requests.get(url, timeout=10)
        body = response.json()
    except requests.ConnectionError as exc:
        raise CliError(f"cannot connect to {server} (is the platform running?)", EXIT_CONNECTION) from exc
    except (requests.RequestException, ValueError) as exc:
        raise CliError(f"{url} did not answer with health JSON: {exc}") from exc
    if output != "table":
        print_data(body, output)
    else:
        rows = [("database", body["database"]), ("broker", body["broker"])]
        rows += [(f"docker ({node})", state) for node, state in body.get("docker", {}).items()]
        table = [
            (name, state["status"], state.get("error") or state.get("version") or state.get("vendor") or "")
            for name, state in rows
        ]
        print_table(("PART", "STATUS", "DETAIL"), table, styles={1: status_style})
    sys.exit(0 if body.get("status") == "up" else EXIT_ERROR)


LOGIN_TOKEN_DAYS = 30
LOGIN_TOKEN_MAX_DAYS = 365


def _ask_credentials(server: str, username: str | None, password_stdin: bool) -> tuple[str, str]:
    """A user name and password: from the options and stdin, or asked for on the terminal."""
    if password_stdin:
        if not username:
            raise usage_error("--password-stdin needs --username")
        return username, users.read_password_stdin()
    if not sys.stdin.isatty():
        raise usage_error(
            "no terminal to ask the password on: pipe it in with --password-stdin (and --username), or pass --token"
        )
    if not username:
        username = click.prompt(f"Username for {server}", err=True).strip()
    password = click.prompt("Password", hide_input=True, err=True)
    if not username or not password:
        raise usage_error("a user name and a password are needed")
    return username, password


def password_login(server: str, username: str, password: str, *, expires_in_days: int) -> str:
    """POST /api/v1/auth/login/: a fresh token named after this machine, for the CLI to keep."""
    body = {
        "username": username,
        "password": password,
        "name": f"cli@{socket.gethostname()}"[:100],
        "expires_in_days": expires_in_days,
    }
    try:
        answer = ApiClient(server, None).post(api_path("auth/login"), body)
    except ApiError as exc:
        if exc.status == 404:
            raise CliError(f"{server} has no password login (is it a Hivemind API of this version?)") from exc
        if exc.status == 429:
            raise CliError(f"{exc.message} (too many login attempts)") from exc
        raise
    if not isinstance(answer, dict) or not answer.get("token"):
        raise CliError(f"{server}/api/v1/auth/login/ did not answer with a token (is the server a Hivemind API?)")
    return answer["token"]


@cli.command(
    epilog=examples(
        "hivemind login --server https://hivemind.example.com",
        "hivemind login --server http://127.0.0.1:8000 --username admin",
        "hivemind login --server URL --username ci --password-stdin < ci-password.txt",
        "hivemind login --server URL --username admin --expires-in-days 7",
        "HIVEMIND_TOKEN=hm_... hivemind login --server http://10.0.0.5:8000 --context edge",
    )
)
@click.option("--server", "login_server", metavar="URL", help="Base URL of the Hivemind API.")
@click.option("--username", "-u", metavar="NAME", help="Log in with this user's password [default: asked for].")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (for scripts); needs --username.")
@click.option(
    "--expires-in-days",
    type=click.IntRange(1, LOGIN_TOKEN_MAX_DAYS),
    default=LOGIN_TOKEN_DAYS,
    show_default=True,
    help=f"Days the token made by a password login lives (1 to {LOGIN_TOKEN_MAX_DAYS}).",
)
@click.option(
    "--token",
    "login_token",
    metavar="TOKEN",
    help="Use this API token instead of a password [also $HIVEMIND_TOKEN, or piped on stdin].",
)
@click.option(
    "--context", "context_name", metavar="NAME", help="Save the login under this name [default: the server's host]."
)
@pass_session
def login(
    session: Session,
    login_server: str | None,
    username: str | None,
    password_stdin: bool,
    expires_in_days: int,
    login_token: str | None,
    context_name: str | None,
) -> None:
    """Log in to a server and save the login as the current context.

    \b
    With a user name and password (asked for on a terminal, or --username with
    --password-stdin), the server makes a token for this machine, named
    cli@<host name>, that expires after --expires-in-days. With --token (or
    $HIVEMIND_TOKEN, or a token piped on stdin) that token is checked and kept.

    When you belong to exactly one tenant it becomes the context's tenant (staff:
    the only tenant, on a platform with one); otherwise pick one with
    `hivemind context use <tenant>`.
    """
    config = session.config
    name = context_name or session.context_option
    previous = config.contexts.get(name) if name else None
    raw_server = login_server or session.server_option or (previous.server if previous else None)
    if not raw_server:
        raise usage_error("no server: pass --server URL")
    server = check_server_url(raw_server)
    if not name:
        name = server_host(server)
        previous = config.contexts.get(name)
    token = login_token or session.token_option
    if token and (username or password_stdin):
        raise usage_error("give a token or a user name, not both")
    if not token and (username or password_stdin or sys.stdin.isatty()):
        user, password = _ask_credentials(server, username, password_stdin)
        token = password_login(server, user, password, expires_in_days=expires_in_days)
    elif not token:  # piped: `pass show hivemind-token | hivemind login --server URL`
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise usage_error("no token: pass --username (and give the password) or --token, or set HIVEMIND_TOKEN")

    client = ApiClient(server, token)
    me = client.get(api_path("me"))
    if not isinstance(me, dict) or "username" not in me:
        raise CliError(f"{server}/api/v1/me/ did not answer with a user (is the server a Hivemind API?)")
    memberships = me.get("memberships") or []
    member_of = [m["tenant"] for m in memberships]
    if len(member_of) == 1:
        tenant = member_of[0]
    elif previous and previous.server == server and (previous.tenant in member_of or me.get("is_staff")):
        tenant = previous.tenant
    elif not member_of and me.get("is_staff"):
        tenant = _only_tenant(client)
    else:
        tenant = None

    config.contexts[name] = Context(name=name, server=server, token=token, tenant=tenant)
    config.current_context = name
    save_config(config)

    who = me["username"] + (" (staff)" if me.get("is_staff") else "")
    click.echo(f"Logged in to {server} as {style(who, bold=True)}; context {name!r} is now current.")
    if tenant:
        role = next((m.get("role") for m in memberships if m["tenant"] == tenant), None)
        click.echo(f"Tenant: {tenant}" + (f" (role {role})" if role else ""))
    elif member_of:
        click.echo(
            f"You belong to {len(member_of)} tenants ({', '.join(member_of)}): "
            "pick one with `hivemind context use <tenant>`."
        )
    elif me.get("is_staff"):
        click.echo("You belong to no tenant; as staff, pick any with `hivemind context use <tenant>`.")
    else:
        click.echo("You belong to no tenant yet.")


def _only_tenant(client: ApiClient) -> str | None:
    """The platform's one tenant, if it has just one (a fresh install's `default`)."""
    page = client.get(api_path("tenants"), params={"limit": 2})
    rows = page.get("results", []) if isinstance(page, dict) else []
    return rows[0]["slug"] if len(rows) == 1 and page.get("count") == 1 else None


cli.add_command(contexts.context)
cli.add_command(tenants.tenant)
cli.add_command(workflows.workflow)
cli.add_command(nodes.node)
cli.add_command(apps.app)
cli.add_command(networks.network)
cli.add_command(networks.ip_pool)
cli.add_command(volumes.volume)
cli.add_command(volumes.pool)
cli.add_command(policies.policy)
cli.add_command(users.user)
cli.add_command(observability.observability)
cli.add_command(notifiers.notifier)
cli.add_command(alerts.alert)
cli.add_command(backups.backup)
cli.add_command(completion)


def main() -> None:
    try:
        cli(prog_name=PROG_NAME)  # prog_name also names the completion variable, _HIVEMIND_COMPLETE
    except BrokenPipeError:  # `hivemind tenant ls | head`
        sys.stderr.close()
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # never a traceback in front of a user
        click.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_ERROR)
