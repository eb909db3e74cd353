"""`hivemind network` and `hivemind ip-pool`: a tenant's networks, and the address pools
(platform staff) their prefixes come from.

Networks are named within a tenant (the context's, or --tenant) and found by name the way
apps are (apps.Target). Creating or deleting one needs no workflow: the server answers at
once, and each node makes or drops its devices when a member is placed there or leaves.
"""

from __future__ import annotations

import ipaddress

import click
from django.core.exceptions import ValidationError

from hivemind.cli.apps import Target
from hivemind.cli.client import api_path
from hivemind.cli.errors import EXIT_NOT_FOUND, CliError, not_found_as, usage_error
from hivemind.cli.output import (
    confirm_typed,
    examples,
    labels_text,
    output_option,
    print_data,
    print_fields,
    print_table,
    status_style,
    style,
    when,
)
from hivemind.cli.session import Session, pass_session
from hivemind.cli.tenants import _parse_labels, tenant_option
from hivemind.cli.workflows import age_text
from hivemind.core import limits
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from hivemind.nodes.labels import LabelError, check_key, check_value

# The prefix lengths a network may ask for: the server's networking.ipam.PREFIX_LIMITS (which
# needs Django's models to import); tests/cli/test_cli_networks.py keeps the two equal.
PREFIX_LIMITS = {4: (8, 28), 6: (48, 80)}
POOLS = api_path("ip-pools")


class NetworkTarget(Target):
    """The tenant's networks, found by name like its apps."""

    resource, noun = "networks", "network"


def _check_name(name: str, what: str = "NAME") -> str:
    """The server's rule for names, checked before anything is sent (exit 2)."""
    if not is_dns_label(name):
        raise usage_error(f"{what}: expected {DNS_LABEL_RULE}, got {name[:70]!r}")
    return name


def _labels(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """`--label k=v` (repeat), with the server's rules for label keys and values."""
    labels = _parse_labels(ctx, param, values)
    try:
        limits.check_count("labels", labels, limits.MAX_LABELS, "labels")
        for key, value in labels.items():
            check_key(key)
            check_value(key, value)
    except LabelError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    except ValidationError as exc:
        raise click.BadParameter(exc.message_dict["labels"][0], ctx=ctx, param=param) from None
    return labels


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def _section(headers: tuple[str, ...], rows: list[tuple[str, ...]], *, empty: str) -> None:
    """A table of `network info`; when it has no rows, a line saying so in its place (on stdout,
    with the rest of what the command shows)."""
    if rows:
        print_table(headers, rows)
    else:
        click.echo(empty)


def _show_network(network: dict) -> None:
    """One network as `hivemind network info` shows it: facts, node ranges, members."""
    apps = network.get("apps") or []
    print_fields(
        [
            ("Name", network.get("name", "")),
            ("Tenant", network.get("tenant", "")),
            ("Status", status_style(network.get("status", ""))),
            ("Default", "yes (apps that name no network join it)" if network.get("is_default") else "no"),
            ("IPv4 prefix", network.get("subnet4") or "-"),
            ("IPv6 prefix", network.get("subnet6") or "-"),
            ("VNI", str(network.get("vni") or "-")),
            (
                "Default deny",
                "yes (ingress only where a network policy allows)" if network.get("default_deny") else "no",
            ),
            ("Labels", labels_text(network.get("labels"))),
            ("Apps", ", ".join(apps) or "-"),
            ("Created", when(network.get("created_at"))),
            ("Updated", when(network.get("updated_at"))),
        ]
    )
    click.echo()
    ranges = [
        (
            r.get("node") or "-",
            r.get("range4") or "-",
            r.get("gateway4") or "-",
            r.get("range6") or "-",
            r.get("gateway6") or "-",
        )
        for r in network.get("node_ranges") or []
    ]
    _section(
        ("NODE", "IPV4 RANGE", "IPV4 GATEWAY", "IPV6 RANGE", "IPV6 GATEWAY"),
        ranges,
        empty="No node ranges: a node gets one when a member is placed on it.",
    )
    click.echo()
    members = [
        (m.get("container", ""), m.get("app", ""), m.get("node") or "-", m.get("ipv4") or "-", m.get("ipv6") or "-")
        for m in network.get("members") or []
    ]
    _section(("CONTAINER", "APP", "NODE", "IPV4", "IPV6"), members, empty="No members.")


# hivemind network ------------------------------------------------------------------------------


@click.group(
    epilog=examples(
        "hivemind network create backend --label tier=backend",
        "hivemind network ls",
        "hivemind network info backend",
    )
)
def network() -> None:
    """Networks: a tenant's L2 segments across the nodes that run their members.

    Each network has an IPv4 and an IPv6 prefix (unless created without one) and a VXLAN
    network identifier (VNI); neither changes while it exists. Apps join the networks their
    spec names; an app that names none joins the tenant's default network, made on first use.
    Viewers may look (ls, info); operators and above create and remove networks.
    """


@network.command("ls", epilog=examples("hivemind network ls", "hivemind network ls --tenant acme -o json"))
@tenant_option
@output_option
@pass_session
def network_ls(session: Session, tenant_slug: str | None, output: str) -> None:
    """List the tenant's networks: prefixes, VNI, whether it is the default and denies ingress by default."""
    target = NetworkTarget(session, tenant_slug)
    networks = target.all()
    if output != "table":
        print_data(networks, output)
        return
    rows = [
        (
            n["name"],
            n.get("status", ""),
            n.get("subnet4") or "-",
            n.get("subnet6") or "-",
            str(n.get("vni") or "-"),
            _yes_no(n.get("is_default")),
            _yes_no(n.get("default_deny")),
            labels_text(n.get("labels")),
            age_text(n.get("created_at")),
        )
        for n in networks
    ]
    print_table(
        ("NAME", "STATUS", "IPV4", "IPV6", "VNI", "DEFAULT", "DEFAULT-DENY", "LABELS", "AGE"),
        rows,
        styles={1: status_style},
        empty=f"No networks in tenant {target.tenant}.",
    )


@network.command(
    "create",
    epilog=examples(
        "hivemind network create backend",
        "hivemind network create db --no-ipv6 --prefix4 26 --label tier=db --default-deny",
        "hivemind network create v6only --no-ipv4 --prefix6 56",
    ),
)
@click.argument("name")
@click.option("--no-ipv4", "no_ipv4", is_flag=True, help="No IPv4 prefix (an IPv6-only network).")
@click.option("--no-ipv6", "no_ipv6", is_flag=True, help="No IPv6 prefix (an IPv4-only network).")
@click.option(
    "--prefix4",
    type=click.IntRange(*PREFIX_LIMITS[4]),
    metavar="N",
    help="IPv4 prefix length [default: the pool's, normally 24].",
)
@click.option(
    "--prefix6",
    type=click.IntRange(*PREFIX_LIMITS[6]),
    metavar="N",
    help="IPv6 prefix length [default: the pool's, normally 64].",
)
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", callback=_labels, help="A label (repeat for more)."
)
@click.option(
    "--default-deny",
    is_flag=True,
    help="Let traffic into its members only where a network policy allows it [default: all members talk].",
)
@tenant_option
@output_option
@pass_session
def network_create(
    session: Session,
    name: str,
    no_ipv4: bool,
    no_ipv6: bool,
    prefix4: int | None,
    prefix6: int | None,
    labels: dict,
    default_deny: bool,
    tenant_slug: str | None,
    output: str,
) -> None:
    """Create a network NAME (a DNS label, unique in the tenant), dual stack unless told otherwise.

    Its prefixes come from the platform's default IP pools. It holds one `networks` of the
    tenant's quota: an exceeded quota, a taken name or an exhausted pool exits 7. Apps join
    it by naming it in their spec's `networks`.
    """
    _check_name(name)
    if no_ipv4 and no_ipv6:
        raise usage_error("--no-ipv4 and --no-ipv6: a network needs IPv4, IPv6 or both")
    if no_ipv4 and prefix4 is not None:
        raise usage_error("--prefix4: the network has no IPv4 prefix (--no-ipv4)")
    if no_ipv6 and prefix6 is not None:
        raise usage_error("--prefix6: the network has no IPv6 prefix (--no-ipv6)")
    target = NetworkTarget(session, tenant_slug)
    body: dict = {
        "tenant": target.tenant,
        "name": name,
        "ipv4": not no_ipv4,
        "ipv6": not no_ipv6,
        "labels": labels,
        "default_deny": default_deny,
    }
    body.update({key: value for key, value in (("prefix4", prefix4), ("prefix6", prefix6)) if value is not None})
    with not_found_as(f"tenant {target.tenant}"):
        created = target.client.post(api_path("networks"), body)
    if output != "table":
        print_data(created, output)
        return
    prefixes = " and ".join(p for p in (created.get("subnet4"), created.get("subnet6")) if p)
    click.echo(
        f"Created network {style(created.get('name', name), bold=True)} in tenant {target.tenant}: "
        f"{prefixes}, VNI {created.get('vni')}."
    )


@network.command("info", epilog=examples("hivemind network info backend", "hivemind network info default -o yaml"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def network_info(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    """Show one network: prefixes, VNI, each node's range and gateways, members and their addresses, apps."""
    found = NetworkTarget(session, tenant_slug).get(name)
    if output != "table":
        print_data(found, output)
        return
    _show_network(found)


@network.command("rm", epilog=examples("hivemind network rm backend", "hivemind network rm backend --yes"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@tenant_option
@pass_session
def network_rm(session: Session, name: str, yes: bool, tenant_slug: str | None) -> None:
    """Delete a network and give its quota back.

    The server refuses (exit 7, naming them) while apps use it: move them to another
    network or delete them first. You are asked to type the name again unless --yes is given.
    """
    target = NetworkTarget(session, tenant_slug)
    target.delete(name, yes=yes)
    click.echo(f"Deleted network {name} from tenant {target.tenant}.")


# hivemind ip-pool ------------------------------------------------------------------------------


def _find_pool(session: Session, name: str) -> dict:
    """The pool called `name` (pools are few: the whole list is read), or exit 6."""
    found = next((p for p in session.client().list_all(POOLS) if p.get("name") == name), None)
    if found is None:
        raise CliError(f"IP pool {name} not found", EXIT_NOT_FOUND)
    return found


def _parse_cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise usage_error(f"--cidr: expected a prefix such as 10.128.0.0/12 or fd00:1::/48: {exc}") from None


@click.group(
    "ip-pool",
    epilog=examples(
        "hivemind ip-pool ls",
        "hivemind ip-pool create edge-v4 --cidr 10.64.0.0/16 --default-prefix 26",
        "hivemind ip-pool rm edge-v4",
    ),
)
def ip_pool() -> None:
    """IP pools (platform staff only): the blocks of addresses networks get their prefixes from.

    A default IPv4 pool (10.128.0.0/12, or the server's HIVEMIND_IPV4_POOL) and a default
    IPv6 pool (a random unique local /48, or HIVEMIND_IPV6_POOL) are made on first use; a new
    network takes its prefixes from its family's default pool.
    """


@ip_pool.command("ls", epilog=examples("hivemind ip-pool ls", "hivemind ip-pool ls -o json"))
@output_option
@pass_session
def ip_pool_ls(session: Session, output: str) -> None:
    """List the IP pools: family, what for (network prefixes or apps' virtual addresses), prefix,
    the prefix length networks get, and how many networks hold one."""
    pools = session.client().list_all(POOLS)
    if output != "table":
        print_data(pools, output)
        return
    rows = [
        (
            p["name"],
            f"IPv{p.get('family')}",
            p.get("purpose", "networks"),
            p.get("cidr", ""),
            f"/{p.get('default_prefix')}",
            _yes_no(p.get("is_default")),
            str(p.get("networks", 0)),
            when(p.get("created_at")),
        )
        for p in pools
    ]
    print_table(
        ("NAME", "FAMILY", "PURPOSE", "CIDR", "NETWORK PREFIX", "DEFAULT", "NETWORKS", "CREATED"),
        rows,
        empty="No IP pools yet: the default ones are made when the first network is.",
    )


@ip_pool.command(
    "create",
    epilog=examples(
        "hivemind ip-pool create edge-v4 --cidr 10.64.0.0/16",
        "hivemind ip-pool create site-v6 --cidr fd00:1::/48 --default-prefix 64 --default",
    ),
)
@click.argument("name")
@click.option("--cidr", required=True, metavar="PREFIX", help="The pool's block, e.g. 10.64.0.0/16 or fd00:1::/48.")
@click.option(
    "--default-prefix",
    type=int,
    metavar="N",
    help=(
        f"Prefix length a network gets from it unless it asks [default: 24 for IPv4 "
        f"({PREFIX_LIMITS[4][0]} to {PREFIX_LIMITS[4][1]}), 64 for IPv6 "
        f"({PREFIX_LIMITS[6][0]} to {PREFIX_LIMITS[6][1]}), never shorter than the pool's]."
    ),
)
@click.option("--default", "is_default", is_flag=True, help="New networks of its family take their prefix from it.")
@output_option
@pass_session
def ip_pool_create(
    session: Session, name: str, cidr: str, default_prefix: int | None, is_default: bool, output: str
) -> None:
    """Create an IP pool NAME, a DNS label (staff only). Its block must not overlap another pool's."""
    _check_name(name)
    block = _parse_cidr(cidr)
    if default_prefix is not None:
        low, high = PREFIX_LIMITS[block.version]
        low = max(low, block.prefixlen)
        if not low <= default_prefix <= high:
            raise usage_error(f"--default-prefix: expected {low} to {high} for {block}, got {default_prefix}")
    body: dict = {"name": name, "cidr": str(block), "is_default": is_default}
    if default_prefix is not None:
        body["default_prefix"] = default_prefix
    created = session.client().post(POOLS, body)
    if output != "table":
        print_data(created, output)
        return
    click.echo(
        f"Created IP pool {style(created.get('name', name), bold=True)}: {created.get('cidr')}, "
        f"networks get a /{created.get('default_prefix')}" + (" (its family's default)." if is_default else ".")
    )


@ip_pool.command("rm", epilog=examples("hivemind ip-pool rm edge-v4", "hivemind ip-pool rm edge-v4 --yes"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@pass_session
def ip_pool_rm(session: Session, name: str, yes: bool) -> None:
    """Delete an IP pool (staff only). The server refuses (exit 7) while a network holds a prefix of it."""
    found = _find_pool(session, name)
    if not yes:
        confirm_typed(name, f"Type the name ({name}) to delete IP pool {name}", noun="name", refused="deleted")
    with not_found_as(f"IP pool {name}"):
        session.client().delete(api_path("ip-pools", found["id"]))
    click.echo(f"Deleted IP pool {name}.")
