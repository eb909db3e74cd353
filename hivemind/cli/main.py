"""The `hivemind` command line. It talks to the REST API only, never to the database."""

from __future__ import annotations

import json
import os
import sys

import click
import requests

from hivemind import __version__

DEFAULT_SERVER = "http://127.0.0.1:8000"
EXIT_ERROR, EXIT_USAGE, EXIT_CONNECTION = 1, 2, 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hivemind")
@click.option(
    "--server",
    envvar="HIVEMIND_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="Base URL of the Hivemind API (or set HIVEMIND_SERVER).",
)
@click.pass_context
def cli(ctx: click.Context, server: str) -> None:
    """Hivemind: run containers on small clusters and edge sites.

    \b
    Example:
      hivemind --server http://10.0.0.5:8000 health
    """
    if not server.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"expected a URL starting with http:// or https://, got {server!r}", param_hint="--server"
        )
    ctx.obj = {"server": server.rstrip("/")}


@cli.command()
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def health(ctx: click.Context, output: str) -> None:
    """Show whether the database, the broker and each node's Docker answer.

    Exits 0 when every part is up, 1 when one is down, 3 when the server cannot be reached.

    \b
    Example:
      hivemind health -o json
    """
    url = f"{ctx.obj['server']}/api/v1/health/"
    try:
        response = requests.get(url, timeout=10)
        body = response.json()
    except requests.ConnectionError:
        click.echo(f"error: cannot connect to {ctx.obj['server']} (is the platform running?)", err=True)
        sys.exit(EXIT_CONNECTION)
    except (requests.RequestException, ValueError) as exc:
        click.echo(f"error: {url} did not answer with health JSON: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    if output == "json":
        click.echo(json.dumps(body, indent=2))
    else:
        rows = [("database", body["database"]), ("broker", body["broker"])]
        rows += [(f"docker ({node})", state) for node, state in body.get("docker", {}).items()]
        for name, state in rows:
            detail = state.get("error") or state.get("version") or state.get("vendor") or ""
            colour = "green" if state["status"] == "up" else "red"
            click.echo(f"{name:<22} {click.style(state['status'], fg=colour):<6} {detail}")
    sys.exit(0 if body.get("status") == "up" else EXIT_ERROR)


def main() -> None:
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    cli()
