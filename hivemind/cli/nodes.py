"""`hivemind node`: the machines that run containers; platform staff label, taint, cordon and drain them."""

from __future__ import annotations

import re

import click

from hivemind.cli.client import api_path
from hivemind.cli.errors import not_found_as, usage_error
from hivemind.cli.output import (
    confirm_typed,
    examples,
    human_bytes,
    labels_text,
    output_option,
    print_data,
    print_fields,
    print_table,
    status_style,
    when,
)
from hivemind.cli.session import Session, pass_session
from hivemind.cli.workflows import age_text

STATES = ("ready", "not-ready", "cordoned", "draining")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# key=value:Effect, key:Effect (empty value); removal: key- or key:Effect-
TAINT = re.compile(r"^(?P<key>[^=:]+)(=(?P<value>[^:]*))?:(?P<effect>[A-Za-z]+)$")
TAINT_REMOVE = re.compile(r"^(?P<key>[^=:]+)(:(?P<effect>[A-Za-z]+))?-$")


def cores(millis: int | None) -> str:
    return f"{(millis or 0) / 1000:g}"


def taint_text(taint: dict) -> str:
    """`key=value:Effect`, or `key:Effect` without a value: what `hivemind node taint` takes."""
    value = f"={taint['value']}" if taint.get("value") else ""
    return f"{taint['key']}{value}:{taint['effect']}"


def taints_text(taints: list[dict] | None) -> str:
    return ",".join(taint_text(t) for t in taints or []) or "-"


def parse_label_changes(items: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """`zone=eu-1 old-` -> ({"zone": "eu-1"}, ["old"]); the server checks the syntax of keys and values."""
    set_labels: dict[str, str] = {}
    remove: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key:
            set_labels[key] = value
        elif not sep and item.endswith("-") and len(item) > 1:
            remove.append(item[:-1])
        else:
            raise usage_error(f"expected KEY=VALUE to set a label or KEY- to remove one, got {item!r}")
    return set_labels, remove


def parse_taint_changes(items: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """`gpu=true:NoSchedule spot:NoExecute old- dedicated:NoSchedule-` -> (add, remove)."""
    add: list[dict] = []
    remove: list[dict] = []
    for item in items:
        removal = TAINT_REMOVE.match(item)
        taint = TAINT.match(item)
        match = removal or taint
        if match is None:
            raise usage_error(
                f"expected KEY=VALUE:EFFECT (or KEY:EFFECT) to add a taint, KEY- or KEY:EFFECT- to remove, got {item!r}"
            )
        effect = match.group("effect")
        if effect is not None and effect not in EFFECTS:
            raise usage_error(f"taint {item!r}: the effect must be one of {', '.join(EFFECTS)}, got {effect!r}")
        if removal:
            remove.append({"key": match.group("key"), **({"effect": effect} if effect else {})})
        else:
            add.append({"key": match.group("key"), "value": match.group("value") or "", "effect": effect})
    return add, remove


def _usage(figures: dict, key: str, render) -> str:
    allocated, capacity = (figures.get("allocated") or {}).get(key), (figures.get("capacity") or {}).get(key)
    return f"{render(allocated or 0)}/{render(capacity or 0)}"


def _show_node(node: dict, output: str) -> None:
    if output != "table":
        print_data(node, output)
        return
    capacity, allocated, free = node.get("capacity") or {}, node.get("allocated") or {}, node.get("free") or {}
    pairs = [
        ("Name", node.get("name", "")),
        ("State", status_style(node.get("state", ""))),
        ("Address", node.get("address") or "-"),
        ("Labels", labels_text(node.get("labels"))),
        ("Taints", taints_text(node.get("taints"))),
        (
            "CPU",
            f"{cores(allocated.get('cpu_millis'))} of {cores(capacity.get('cpu_millis'))} cores allocated, "
            f"{cores(free.get('cpu_millis'))} free",
        ),
        (
            "Memory",
            f"{human_bytes(allocated.get('memory_bytes') or 0)} of {human_bytes(capacity.get('memory_bytes') or 0)}"
            f" allocated, {human_bytes(free.get('memory_bytes') or 0)} free",
        ),
        ("Disk free", human_bytes(capacity.get("disk_bytes") or 0)),
        ("Containers", str(node.get("containers", 0))),
        ("Docker", node.get("docker_version") or "-"),
    ]
    if node.get("docker_host"):
        pairs.append(("Docker endpoint", node["docker_host"]))
    pairs += [
        ("OS", node.get("os") or "-"),
        ("Arch", node.get("arch") or "-"),
        ("Last heartbeat", f"{when(node.get('last_heartbeat'))} ({age_text(node.get('last_heartbeat'))} ago)"),
        ("Registered", when(node.get("registered_at"))),
    ]
    print_fields(pairs)


@click.group(epilog=examples("hivemind node ls", "hivemind node info edge-01", "hivemind node drain edge-01"))
def node() -> None:
    """Nodes: the machines that run containers. Everyone reads them; platform staff change them."""


@node.command("ls", epilog=examples("hivemind node ls", "hivemind node ls --state ready -l zone=eu-1,gpu -o json"))
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Only nodes in this state (repeat).")
@click.option(
    "--label",
    "-l",
    "selectors",
    multiple=True,
    metavar="SELECTOR",
    help="Label selector: key=value, key!=value, key or !key, comma-separated (repeat to add more).",
)
@output_option
@pass_session
def node_ls(session: Session, states: tuple[str, ...], selectors: tuple[str, ...], output: str) -> None:
    """List nodes with their state, allocated/capacity CPU (cores) and memory, and labels."""
    params: dict = {}
    if states:
        params["state"] = list(states)
    if selectors:
        params["label"] = list(selectors)
    nodes = session.client().list_all(api_path("nodes"), params)
    if output != "table":
        print_data(nodes, output)
        return
    rows = [
        (
            n["name"],
            n.get("state", ""),
            n.get("address") or "-",
            _usage(n, "cpu_millis", cores),
            _usage(n, "memory_bytes", human_bytes),
            str(n.get("containers", 0)),
            labels_text(n.get("labels")),
            taints_text(n.get("taints")),
            age_text(n.get("last_heartbeat")),
        )
        for n in nodes
    ]
    print_table(
        ("NAME", "STATE", "ADDRESS", "CPU", "MEMORY", "CONTAINERS", "LABELS", "TAINTS", "HEARTBEAT"),
        rows,
        styles={1: status_style},
        empty="No nodes." if not (states or selectors) else "No nodes match.",
    )


@node.command("info", epilog=examples("hivemind node info edge-01", "hivemind node info edge-01 -o yaml"))
@click.argument("name")
@output_option
@pass_session
def node_info(session: Session, name: str, output: str) -> None:
    """Show one node: capacity, what its containers ask for, labels, taints and heartbeat."""
    with not_found_as(f"node {name}"):
        found = session.client().get(api_path("nodes", name))
    _show_node(found, output)


@node.command(
    "label",
    epilog=examples("hivemind node label edge-01 zone=eu-1 disk=ssd", "hivemind node label edge-01 disk-"),
)
@click.argument("name")
@click.argument("changes", nargs=-1, required=True, metavar="KEY=VALUE... | KEY-...")
@output_option
@pass_session
def node_label(session: Session, name: str, changes: tuple[str, ...], output: str) -> None:
    """Set labels (KEY=VALUE) and remove them (KEY-) in one change (staff only)."""
    set_labels, remove = parse_label_changes(changes)
    with not_found_as(f"node {name}"):
        changed = session.client().post(api_path("nodes", name, "label"), {"set": set_labels, "remove": remove})
    if output != "table":
        print_data(changed, output)
        return
    click.echo(f"Node {name} labels: {labels_text(changed.get('labels'))}")


@node.command(
    "taint",
    epilog=examples(
        "hivemind node taint edge-01 gpu=true:NoSchedule",
        "hivemind node taint edge-01 maintenance:NoExecute",
        "hivemind node taint edge-01 gpu-   # every taint of key gpu",
        "hivemind node taint edge-01 gpu:NoSchedule-",
    ),
)
@click.argument("name")
@click.argument("changes", nargs=-1, required=True, metavar="KEY[=VALUE]:EFFECT... | KEY[:EFFECT]-...")
@output_option
@pass_session
def node_taint(session: Session, name: str, changes: tuple[str, ...], output: str) -> None:
    """Add taints (KEY=VALUE:EFFECT) and remove them (KEY- or KEY:EFFECT-) (staff only).

    \b
    Effects: NoSchedule (only replicas that tolerate the taint are placed here),
    PreferNoSchedule (avoided when possible), NoExecute (replicas that do not
    tolerate it are moved away too).
    """
    add, remove = parse_taint_changes(changes)
    with not_found_as(f"node {name}"):
        changed = session.client().post(api_path("nodes", name, "taint"), {"add": add, "remove": remove})
    if output != "table":
        print_data(changed, output)
        return
    click.echo(f"Node {name} taints: {taints_text(changed.get('taints'))}")


def _flag_change(session: Session, name: str, action: str, output: str) -> dict:
    with not_found_as(f"node {name}"):
        changed = session.client().post(api_path("nodes", name, action))
    if output != "table":
        print_data(changed, output)
    return changed


@node.command("cordon", epilog=examples("hivemind node cordon edge-01"))
@click.argument("name")
@output_option
@pass_session
def node_cordon(session: Session, name: str, output: str) -> None:
    """Place no new replicas on a node; what runs there keeps running (staff only)."""
    changed = _flag_change(session, name, "cordon", output)
    if output == "table":
        click.echo(f"Node {name} is cordoned: no new replicas are placed on it.")
        if changed.get("state") == "not-ready":
            click.echo(f"It is also {status_style('not-ready')}.")


@node.command("uncordon", epilog=examples("hivemind node uncordon edge-01"))
@click.argument("name")
@output_option
@pass_session
def node_uncordon(session: Session, name: str, output: str) -> None:
    """Let a node take new replicas again; ends a drain too (staff only)."""
    changed = _flag_change(session, name, "uncordon", output)
    if output == "table":
        click.echo(f"Node {name} is now {status_style(changed.get('state', 'ready'))}.")


@node.command("drain", epilog=examples("hivemind node drain edge-01", "hivemind node ls --state draining"))
@click.argument("name")
@output_option
@pass_session
def node_drain(session: Session, name: str, output: str) -> None:
    """Cordon a node and mark it draining: the app reconciler moves its replicas to other
    nodes. The command returns at once; `hivemind node info NAME` shows the containers left
    (staff only)."""
    changed = _flag_change(session, name, "drain", output)
    if output == "table":
        left = changed.get("containers", 0)
        click.echo(
            f"Node {name} is draining: no new replicas are placed on it and its {left} container(s) are moved away."
        )


@node.command("rm", epilog=examples("hivemind node rm edge-01", "hivemind node rm edge-01 --yes"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@pass_session
def node_rm(session: Session, name: str, yes: bool) -> None:
    """Remove a node (staff only). The server refuses (exit 7) while the node is ready and
    still has containers: drain it first, or stop its agent."""
    client = session.client()
    if not yes:
        confirm_typed(name, f"Type the name ({name}) to remove node {name}", noun="name", refused="removed")
    with not_found_as(f"node {name}"):
        client.delete(api_path("nodes", name))
    click.echo(f"Removed node {name}.")
