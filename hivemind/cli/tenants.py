"""`hivemind tenant` and `hivemind tenant member`: tenants, their quotas' usage and their members."""

from __future__ import annotations

import click

from hivemind.cli.client import ApiClient, api_path
from hivemind.cli.config import save_config
from hivemind.cli.errors import EXIT_NOT_FOUND, CliError, not_found_as, usage_error
from hivemind.cli.output import (
    confirm_typed,
    examples,
    labels_text,
    output_option,
    print_data,
    print_fields,
    print_table,
    quantity,
    status_style,
    style,
    when,
)
from hivemind.cli.session import Session, pass_session

ISOLATION_LEVELS = ("hard", "soft", "network-only")
ROLES = ("owner", "admin", "operator", "viewer")

tenant_option = click.option(
    "--tenant",
    "tenant_slug",
    metavar="SLUG",
    help="The tenant to act on [default: the context's tenant].",
)


def _slug_or_context(session: Session, slug: str | None, command: str) -> str:
    if slug:
        return slug
    try:
        return session.tenant(None)
    except CliError:
        raise usage_error(
            f"no tenant: pass one (`hivemind tenant {command} SLUG`) or run `hivemind context use <tenant>`"
        ) from None


def _parse_labels(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        labels[key.strip()] = value.strip()
    return labels


def _show_tenant(tenant: dict, output: str) -> None:
    if output != "table":
        print_data(tenant, output)
        return
    print_fields(
        [
            ("Name", tenant.get("name", "")),
            ("Slug", tenant.get("slug", "")),
            ("Description", tenant.get("description") or "-"),
            ("Status", status_style(tenant.get("status", ""))),
            ("Isolation", tenant.get("isolation_level", "")),
            ("Labels", labels_text(tenant.get("labels"))),
            ("My role", tenant.get("my_role") or "-"),
            ("Created", when(tenant.get("created_at"))),
            ("Updated", when(tenant.get("updated_at"))),
        ]
    )


@click.group(epilog=examples("hivemind tenant ls", "hivemind tenant usage acme"))
def tenant() -> None:
    """Tenants: the isolation boundary every app, volume and network belongs to."""


@tenant.command("ls", epilog=examples("hivemind tenant ls", "hivemind tenant ls -o json"))
@output_option
@pass_session
def tenant_ls(session: Session, output: str) -> None:
    """List the tenants you can see (staff see them all)."""
    tenants = session.client().list_all(api_path("tenants"))
    if output != "table":
        print_data(tenants, output)
        return
    rows = [
        (
            t["slug"],
            t.get("name", ""),
            t.get("status", ""),
            t.get("isolation_level", ""),
            t.get("my_role") or "-",
            labels_text(t.get("labels")),
            when(t.get("created_at")),
        )
        for t in tenants
    ]
    print_table(
        ("SLUG", "NAME", "STATUS", "ISOLATION", "MY ROLE", "LABELS", "CREATED"),
        rows,
        styles={2: status_style},
        empty="No tenants.",
    )


@tenant.command(
    "create",
    epilog=examples('hivemind tenant create "Acme Corp" --slug acme --isolation hard --label team=infra'),
)
@click.argument("name")
@click.option("--slug", required=True, help="Short unique name used in URLs and --tenant (e.g. acme).")
@click.option("--description", default="", help="Free text shown in listings.")
@click.option(
    "--isolation",
    type=click.Choice(ISOLATION_LEVELS),
    default="soft",
    show_default=True,
    help="hard: own nodes and networks; soft: shared nodes, own networks; network-only: own networks only.",
)
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", callback=_parse_labels, help="Repeat for more labels."
)
@output_option
@pass_session
def tenant_create(
    session: Session, name: str, slug: str, description: str, isolation: str, labels: dict, output: str
) -> None:
    """Create a tenant (staff only)."""
    body = {"name": name, "slug": slug, "description": description, "isolation_level": isolation, "labels": labels}
    created = session.client().post(api_path("tenants"), body)
    if output != "table":
        print_data(created, output)
        return
    click.echo(f"Created tenant {style(created.get('slug', slug), bold=True)} ({created.get('name', name)}).")


@tenant.command("info", epilog=examples("hivemind tenant info acme", "hivemind tenant info -o yaml"))
@click.argument("slug", required=False)
@output_option
@pass_session
def tenant_info(session: Session, slug: str | None, output: str) -> None:
    """Show one tenant [default: the context's tenant]."""
    slug = _slug_or_context(session, slug, "info")
    with not_found_as(f"tenant {slug}"):
        found = session.client(tenant=slug).get(api_path("tenants", slug))
    _show_tenant(found, output)


@tenant.command("usage", epilog=examples("hivemind tenant usage acme", "hivemind tenant usage -o json"))
@click.argument("slug", required=False)
@output_option
@pass_session
def tenant_usage(session: Session, slug: str | None, output: str) -> None:
    """Show what a tenant uses against each quota [default: the context's tenant]."""
    slug = _slug_or_context(session, slug, "usage")
    with not_found_as(f"tenant {slug}"):
        usage = session.client(tenant=slug).get(api_path("tenants", slug, "usage"))
    if output != "table":
        print_data(usage, output)
        return
    rows = []
    for resource, figures in (usage.get("resources") or {}).items():
        unit, limit, percent = figures.get("unit"), figures.get("limit"), figures.get("percent")
        if limit is not None and percent is not None and percent >= 100:
            note = "at limit"
        else:
            note = "near limit" if figures.get("warning") else ""
        rows.append(
            (
                resource,
                quantity(figures.get("used", 0), unit),
                quantity(limit, unit),
                f"{percent:.1f}%" if percent is not None and limit is not None else "-",
                note,
            )
        )
    print_table(
        ("RESOURCE", "USED", "LIMIT", "USE%", "NOTE"),
        rows,
        styles={4: status_style},
        empty=f"Tenant {slug} reports no resources.",
    )


def _state_change(session: Session, slug: str, action: str, output: str) -> None:
    with not_found_as(f"tenant {slug}"):
        changed = session.client(tenant=slug).post(api_path("tenants", slug, action))
    if output != "table":
        print_data(changed, output)
        return
    click.echo(f"Tenant {slug} is now {status_style(changed.get('status', action + 'ed'))}.")


@tenant.command("suspend", epilog=examples("hivemind tenant suspend acme"))
@click.argument("slug")
@output_option
@pass_session
def tenant_suspend(session: Session, slug: str, output: str) -> None:
    """Suspend a tenant: new work in it is refused; everything it stores is kept."""
    _state_change(session, slug, "suspend", output)


@tenant.command("resume", epilog=examples("hivemind tenant resume acme"))
@click.argument("slug")
@output_option
@pass_session
def tenant_resume(session: Session, slug: str, output: str) -> None:
    """Resume a suspended tenant."""
    _state_change(session, slug, "resume", output)


@tenant.command("delete", epilog=examples("hivemind tenant delete acme", "hivemind tenant delete acme --yes"))
@click.argument("slug")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the slug to confirm.")
@pass_session
def tenant_delete(session: Session, slug: str, yes: bool) -> None:
    """Delete a tenant. The server refuses (exit 7) while it still owns anything.

    You are asked to type the slug again unless --yes is given.
    """
    client = session.client(tenant=slug)
    if not yes:
        confirm_typed(slug, f"Type the slug ({slug}) to delete tenant {slug}", noun="slug", refused="deleted")
    with not_found_as(f"tenant {slug}"):
        client.delete(api_path("tenants", slug), params={"confirm": slug})
    click.echo(f"Deleted tenant {slug}.")
    ctx = session.active_context()
    if ctx and ctx.tenant == slug:
        ctx.tenant = None
        save_config(session.config)
        click.echo(f"Context {ctx.name!r} now works in no tenant.")


@tenant.group(
    "member", epilog=examples("hivemind tenant member ls --tenant acme", "hivemind tenant member add bob --role viewer")
)
def member() -> None:
    """Who belongs to a tenant, and with which role."""


def _memberships(client: ApiClient, slug: str) -> list[dict]:
    with not_found_as(f"tenant {slug}"):
        items = client.list_all(api_path("memberships"), {"tenant": slug})
        if not items:  # an empty list of an unknown tenant should say so
            client.get(api_path("tenants", slug))
    return items


@member.command("ls", epilog=examples("hivemind tenant member ls", "hivemind tenant member ls --tenant acme -o yaml"))
@tenant_option
@output_option
@pass_session
def member_ls(session: Session, tenant_slug: str | None, output: str) -> None:
    """List a tenant's members and their roles."""
    slug = session.tenant(tenant_slug)
    items = _memberships(session.client(tenant=slug), slug)
    if output != "table":
        print_data(items, output)
        return
    rows = [(m.get("user", ""), m.get("role", ""), when(m.get("created_at"))) for m in items]
    print_table(("USER", "ROLE", "SINCE"), rows, empty=f"Tenant {slug} has no members.")


@member.command("add", epilog=examples("hivemind tenant member add bob --role operator --tenant acme"))
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What the user may do in the tenant.")
@tenant_option
@pass_session
def member_add(session: Session, username: str, role: str, tenant_slug: str | None) -> None:
    """Give USERNAME a role in a tenant.

    \b
    Roles: owner (everything, members included), admin (everything but
    deleting the tenant), operator (run and change apps), viewer (read only).
    """
    slug = session.tenant(tenant_slug)
    session.client(tenant=slug).post(api_path("memberships"), {"tenant": slug, "user": username, "role": role})
    click.echo(f"Added {username} to tenant {slug} as {role}.")


@member.command("rm", epilog=examples("hivemind tenant member rm bob --tenant acme"))
@click.argument("username")
@tenant_option
@pass_session
def member_rm(session: Session, username: str, tenant_slug: str | None) -> None:
    """Remove USERNAME from a tenant."""
    slug = session.tenant(tenant_slug)
    client = session.client(tenant=slug)
    found = [m for m in _memberships(client, slug) if m.get("user") == username]
    if not found:
        raise CliError(f"{username} is not a member of tenant {slug}", EXIT_NOT_FOUND)
    for membership in found:
        client.delete(api_path("memberships", membership["id"]))
    click.echo(f"Removed {username} from tenant {slug}.")
