"""`hivemind context`: the saved logins, and the tenant each one works in."""

from __future__ import annotations

import click

from hivemind.cli.client import api_path
from hivemind.cli.config import Context, save_config
from hivemind.cli.errors import CliError, not_found_as, usage_error
from hivemind.cli.output import examples, output_option, print_data, print_fields, print_table, style
from hivemind.cli.session import Session, pass_session


def _public(ctx: Context, current: str | None) -> dict:
    """A context as shown to people and scripts: never the token itself."""
    return {"name": ctx.name, "server": ctx.server, "tenant": ctx.tenant, "current": ctx.name == current}


def _masked(token: str) -> str:
    return f"****{token[-4:]}" if len(token) >= 12 else "****"


def _require_context(session: Session) -> Context:
    ctx = session.context()
    if ctx is None:
        raise CliError("no context yet: run `hivemind login --server URL` first")
    return ctx


@click.group(epilog=examples("hivemind context ls", "hivemind context use acme"))
def context() -> None:
    """Saved logins (server, token and tenant) and which one is current."""


@context.command("ls", epilog=examples("hivemind context ls -o yaml"))
@output_option
@pass_session
def context_ls(session: Session, output: str) -> None:
    """List the saved contexts; `*` marks the current one."""
    config = session.config
    items = [_public(ctx, config.current_context) for ctx in config.contexts.values()]
    if output != "table":
        print_data(items, output)
        return
    rows = [("*" if i["current"] else "", i["name"], i["server"], i["tenant"] or "-") for i in items]
    print_table(
        ("CURRENT", "NAME", "SERVER", "TENANT"),
        rows,
        empty="No contexts: run `hivemind login --server URL`.",
    )


@context.command("show", epilog=examples("hivemind context show", "hivemind --context edge context show -o json"))
@output_option
@pass_session
def context_show(session: Session, output: str) -> None:
    """Show the context in use (or the one --context names); the token is masked."""
    ctx = _require_context(session)
    item = _public(ctx, session.config.current_context)
    if output != "table":
        print_data(item, output)
        return
    print_fields(
        [
            ("Name", ctx.name + (" (current)" if item["current"] else "")),
            ("Server", ctx.server),
            ("Tenant", ctx.tenant or "-"),
            ("Token", _masked(ctx.token)),
            ("Config", str(session.config.path)),
        ]
    )


@context.command(
    "use",
    epilog=examples(
        "hivemind context use acme", "hivemind --context edge context use acme", "hivemind context use --none"
    ),
)
@click.argument("tenant_slug", metavar="TENANT", required=False)
@click.option("--none", "clear", is_flag=True, help="Work in no tenant (staff, or before you belong to one).")
@pass_session
def context_use(session: Session, tenant_slug: str | None, clear: bool) -> None:
    """Make TENANT the tenant of the context in use, after checking the server knows it."""
    if bool(tenant_slug) == clear:
        raise usage_error("pass either a TENANT or --none")
    ctx = _require_context(session)
    if tenant_slug:
        with not_found_as(f"tenant {tenant_slug}"):
            tenant = session.client(tenant=tenant_slug).get(api_path("tenants", tenant_slug))
        tenant_slug = tenant.get("slug", tenant_slug)
    ctx.tenant = tenant_slug
    save_config(session.config)
    if tenant_slug:
        click.echo(f"Context {ctx.name!r} now works in tenant {style(tenant_slug, bold=True)}.")
    else:
        click.echo(f"Context {ctx.name!r} now works in no tenant.")
