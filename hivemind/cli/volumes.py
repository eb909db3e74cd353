"""`hivemind volume` and `hivemind pool`: a tenant's volumes and their snapshots, and the
storage pools (platform staff) they live in.

Volumes are found by name in the tenant (the context's, or --tenant), like apps. Every change
is a workflow on the node that holds the volume's pool: commands wait for it and show its
progress unless --no-wait, and a failure names the step that failed and why.
"""

from __future__ import annotations

import click

from hivemind.cli.apps import Target, finish, wait_option
from hivemind.cli.client import api_path
from hivemind.cli.errors import EXIT_NOT_FOUND, CliError, not_found_as, usage_error
from hivemind.cli.networks import _check_name, _labels
from hivemind.cli.notifiers import SECRET, SET
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
    style,
    when,
)
from hivemind.cli.session import Session, pass_session
from hivemind.cli.tenants import tenant_option
from hivemind.cli.workflows import age_text
from hivemind.core.units import QuantityError, parse_bytes, parse_duration

ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany")
MiB = 1 << 20


class VolumeTarget(Target):
    resource, noun = "volumes", "volume"


def _size(value: str, flag: str = "SIZE") -> str:
    """A size as the server reads it ("10Gi", "512Mi", bytes), checked here (exit 2)."""
    try:
        size = parse_bytes(value)
    except (QuantityError, ValueError) as exc:
        raise usage_error(f"{flag}: {exc}") from None
    if size < MiB:
        raise usage_error(f"{flag}: a volume needs at least 1Mi, got {value!r}")
    return value


def _usage(volume: dict) -> str:
    size, used = volume.get("size_bytes") or 0, volume.get("used_bytes") or 0
    percent = f" ({used * 100 // size} %)" if size else ""
    return f"{human_bytes(used)} of {human_bytes(size)}{percent}"


# hivemind volume --------------------------------------------------------------------------------


@click.group(
    epilog=examples(
        "hivemind volume create data --size 10Gi",
        "hivemind app deploy --name db --image postgres:16 --volume data:/var/lib/postgresql/data",
        "hivemind volume snapshot data before-upgrade",
        "hivemind volume revert data before-upgrade",
    )
)
def volume() -> None:
    """Volumes: data that outlives containers, in a storage pool on a node.

    Apps mount volumes by name (`--volume NAME:PATH`); their replicas run on the node that
    holds the volume. Snapshots are read-only copies a volume can be reverted to or cloned
    from. Viewers may look (ls, info, snapshots); operators and above change volumes.
    """


@volume.command("ls", epilog=examples("hivemind volume ls", "hivemind volume ls -o json"))
@tenant_option
@output_option
@pass_session
def volume_ls(session: Session, tenant_slug: str | None, output: str) -> None:
    """List the tenant's volumes: size and use, pool and node, the apps that mount them."""
    target = VolumeTarget(session, tenant_slug)
    volumes = target.all()
    if output != "table":
        print_data(volumes, output)
        return
    rows = [
        (
            v["name"],
            v.get("status", ""),
            human_bytes(v.get("size_bytes") or 0),
            human_bytes(v.get("used_bytes") or 0),
            v.get("pool") or "-",
            v.get("node") or "-",
            "yes" if v.get("encrypted") else "no",
            str(v.get("snapshots", 0)),
            ", ".join(v.get("apps") or []) or "-",
            age_text(v.get("created_at")),
        )
        for v in volumes
    ]
    print_table(
        ("NAME", "STATUS", "SIZE", "USED", "POOL", "NODE", "ENCRYPTED", "SNAPSHOTS", "APPS", "AGE"),
        rows,
        styles={1: status_style},
        empty=f"No volumes in tenant {target.tenant}.",
    )


@volume.command(
    "create",
    epilog=examples(
        "hivemind volume create data --size 10Gi",
        "hivemind volume create logs --size 512Mi --pool fast --label tier=logs",
    ),
)
@click.argument("name")
@click.option("--size", required=True, metavar="SIZE", help="Its size, e.g. 10Gi or 512Mi (at least 1Mi).")
@click.option("--pool", metavar="POOL", help="The storage pool [default: a ready default pool with room].")
@click.option(
    "--access-mode",
    type=click.Choice(ACCESS_MODES),
    default="ReadWriteOnce",
    show_default=True,
    help="How replicas may mount it.",
)
@click.option("--encrypted", is_flag=True, help="Encrypt its data at rest with the tenant's key.")
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", callback=_labels, help="A label (repeat for more)."
)
@wait_option
@tenant_option
@output_option
@pass_session
def volume_create(
    session: Session,
    name: str,
    size: str,
    pool: str | None,
    access_mode: str,
    encrypted: bool,
    labels: dict,
    no_wait: bool,
    tenant_slug: str | None,
    output: str,
) -> None:
    """Create a volume NAME (a DNS label, unique in the tenant) of SIZE.

    It holds one `volumes` and its size of `storage` of the tenant's quota: an exceeded quota,
    a taken name or a pool without room exits 7 (the pool's free space is named).
    """
    _check_name(name)
    _size(size, "--size")
    target = VolumeTarget(session, tenant_slug)
    body = {"tenant": target.tenant, "name": name, "size": size, "access_mode": access_mode, "labels": labels}
    if pool:
        body["pool"] = pool
    if encrypted:
        body["encrypted"] = True
    with not_found_as(f"tenant {target.tenant}"):
        created = target.client.post(api_path("volumes"), body)
    finish(
        target,
        created,
        what=f"Creating volume {name} ({human_bytes(created.get('size_bytes') or 0)} in pool {created.get('pool')} "
        f"on node {created.get('node')})",
        no_wait=no_wait,
        output=output,
        done=lambda: click.echo(f"Volume {style(name, bold=True)} is ready."),
    )


@volume.command("info", epilog=examples("hivemind volume info data"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def volume_info(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    """Show one volume and its snapshots."""
    target = VolumeTarget(session, tenant_slug)
    found = target.get(name)
    snapshots = target.client.list_all(api_path("snapshots"), {"volume": name, "tenant": target.tenant})
    if output != "table":
        print_data({**found, "snapshot_list": snapshots}, output)
        return
    print_fields(
        [
            ("Name", found["name"]),
            ("Tenant", found.get("tenant", "")),
            ("Status", status_style(found.get("status", ""))),
            ("Size", human_bytes(found.get("size_bytes") or 0)),
            ("Used", _usage(found)),
            ("Pool", f"{found.get('pool')} ({found.get('provider')}) on node {found.get('node')}"),
            ("Access mode", found.get("access_mode") or "-"),
            ("Encrypted", "yes" if found.get("encrypted") else "no"),
            ("Cloned from", found.get("source") or "-"),
            ("Apps", ", ".join(found.get("apps") or []) or "-"),
            ("Snapshot schedule", _schedule_text(found.get("snapshot_schedule"))),
            ("Labels", labels_text(found.get("labels"))),
            ("Message", found.get("message") or "-"),
            ("Created", when(found.get("created_at"))),
        ]
    )
    click.echo()
    _snapshot_table(snapshots, name)


def _schedule_text(schedule: dict | None) -> str:
    if not schedule:
        return "-"
    paused = "" if schedule.get("enabled", True) else " (paused)"
    return f"every {schedule['every']} s, keep {schedule['keep']}{paused}"


def _snapshot_table(snapshots: list[dict], name: str) -> None:
    rows = [(s["name"], s.get("status", ""), human_bytes(s.get("size_bytes") or 0), when(s.get("created_at")))
            for s in snapshots]  # fmt: skip
    print_table(("SNAPSHOT", "STATUS", "VOLUME SIZE", "TAKEN"), rows, styles={1: status_style},
                empty=f"No snapshots of volume {name}.")  # fmt: skip


@volume.command("snapshots", epilog=examples("hivemind volume snapshots data"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def volume_snapshots(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    """List a volume's snapshots, newest first."""
    target = VolumeTarget(session, tenant_slug)
    target.find(name)
    snapshots = target.client.list_all(api_path("snapshots"), {"volume": name, "tenant": target.tenant})
    if output != "table":
        print_data(snapshots, output)
        return
    _snapshot_table(snapshots, name)


@volume.command("expand", epilog=examples("hivemind volume expand data 20Gi"))
@click.argument("name")
@click.argument("size")
@wait_option
@tenant_option
@output_option
@pass_session
def volume_expand(session: Session, name: str, size: str, no_wait: bool, tenant_slug: str | None, output: str) -> None:
    """Give volume NAME the size SIZE (online: the apps using it keep running). Volumes never shrink."""
    _size(size)
    target = VolumeTarget(session, tenant_slug)
    started = target.post(name, "expand", {"size": size})
    finish(target, started, what=f"Expanding volume {name} to {size}", no_wait=no_wait, output=output)


@volume.command("snapshot", epilog=examples("hivemind volume snapshot data before-upgrade"))
@click.argument("name")
@click.argument("snapshot")
@wait_option
@tenant_option
@output_option
@pass_session
def volume_snapshot(
    session: Session, name: str, snapshot: str, no_wait: bool, tenant_slug: str | None, output: str
) -> None:
    """Take a snapshot SNAPSHOT of volume NAME (the apps using it keep running)."""
    _check_name(snapshot, "SNAPSHOT")
    target = VolumeTarget(session, tenant_slug)
    started = target.post(name, "snapshot", {"name": snapshot})
    finish(target, started, what=f"Snapshot {snapshot} of volume {name}", no_wait=no_wait, output=output)


@volume.command("revert", epilog=examples("hivemind volume revert data before-upgrade --yes"))
@click.argument("name")
@click.argument("snapshot")
@click.option("--yes", is_flag=True, help="Do not ask: the volume's current contents are lost.")
@wait_option
@tenant_option
@output_option
@pass_session
def volume_revert(
    session: Session, name: str, snapshot: str, yes: bool, no_wait: bool, tenant_slug: str | None, output: str
) -> None:
    """Revert volume NAME to snapshot SNAPSHOT: the replicas using it stop, the volume holds
    exactly the snapshot's contents, they start again. What was written since is lost."""
    _check_name(snapshot, "SNAPSHOT")
    if not yes:
        click.confirm(f"Revert volume {name} to {snapshot}? Everything written since is lost", abort=True)
    target = VolumeTarget(session, tenant_slug)
    started = target.post(name, "revert", {"snapshot": snapshot})
    finish(target, started, what=f"Reverting volume {name} to {snapshot}", no_wait=no_wait, output=output)


@volume.command("clone", epilog=examples("hivemind volume clone data before-upgrade data-copy"))
@click.argument("name")
@click.argument("snapshot")
@click.argument("new_name", metavar="NEW_NAME")
@wait_option
@tenant_option
@output_option
@pass_session
def volume_clone(
    session: Session, name: str, snapshot: str, new_name: str, no_wait: bool, tenant_slug: str | None, output: str
) -> None:
    """Make NEW_NAME, a new volume with the contents of snapshot SNAPSHOT of volume NAME,
    independent of it (writes to one never show in the other)."""
    _check_name(snapshot, "SNAPSHOT")
    _check_name(new_name, "NEW_NAME")
    target = VolumeTarget(session, tenant_slug)
    started = target.post(name, "clone", {"snapshot": snapshot, "name": new_name})
    finish(target, started, what=f"Cloning {name}@{snapshot} as {new_name}", no_wait=no_wait, output=output)


@volume.command(
    "schedule",
    epilog=examples("hivemind volume schedule data --every 1h --keep 24", "hivemind volume schedule data --every off"),
)
@click.argument("name")
@click.option(
    "--every", required=True, metavar="DURATION", help="How often, e.g. 1h or 30m (at least 1m); off stops it."
)
@click.option("--keep", type=click.IntRange(1, 1000), default=24, show_default=True, help="Automatic snapshots kept.")
@tenant_option
@output_option
@pass_session
def volume_schedule(session: Session, name: str, every: str, keep: int, tenant_slug: str | None, output: str) -> None:
    """Take a snapshot of volume NAME every DURATION (named auto-<time>) and keep the newest KEEP of
    them; your own snapshots are never deleted. --every off stops it."""
    if every not in ("off", "0"):
        try:
            seconds = parse_duration(every, low=60, high=366 * 86400)
        except (QuantityError, ValueError) as exc:
            raise usage_error(f"--every: {exc} (at least a minute; off stops it)") from None
    target = VolumeTarget(session, tenant_slug)
    changed = target.post(name, "snapshot-schedule", {"every": every, "keep": keep})
    if output != "table":
        print_data(changed, output)
        return
    if every in ("off", "0"):
        click.echo(f"Volume {name} has no snapshot schedule any more (its snapshots stay).")
    else:
        click.echo(f"Volume {name}: a snapshot every {int(seconds)} s, the newest {keep} kept.")


@volume.command(
    "replicate",
    epilog=examples(
        "hivemind volume replicate data --pool edge-2-fast --interval 5m", "hivemind volume replicate data --pool p2"
    ),
)
@click.argument("name")
@click.option("--pool", required=True, metavar="POOL", help="A pool on another node that keeps the copy.")
@click.option("--interval", metavar="DURATION", help="Ship a snapshot this often, e.g. 5m [default: only when asked].")
@wait_option
@tenant_option
@output_option
@pass_session
def volume_replicate(
    session: Session, name: str, pool: str, interval: str | None, no_wait: bool, tenant_slug: str | None, output: str
) -> None:
    """Keep a copy of volume NAME in POOL on another node (incremental snapshot streams between
    the nodes' agents) and ship one now; asked again, ship one now."""
    body: dict = {"pool": pool}
    if interval is not None:
        try:
            body["interval"] = int(parse_duration(interval, low=5, high=7 * 86400))
        except (QuantityError, ValueError) as exc:
            raise usage_error(f"--interval: {exc}") from None
    target = VolumeTarget(session, tenant_slug)
    started = target.post(name, "replicate", body)
    if not started.get("workflow"):
        if output != "table":
            print_data(started, output)
        else:
            click.echo(f"Volume {name} replicates to pool {pool}; a transfer is already on its way.")
        return
    finish(target, started, what=f"Replicating volume {name} to pool {pool}", no_wait=no_wait, output=output)


@volume.command("replica", epilog=examples("hivemind volume replica data"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def volume_replica(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    """Show volume NAME's replica: where, how old its data is, the last transfer."""
    target = VolumeTarget(session, tenant_slug)
    replica = target.get(name, "replica")
    if output != "table":
        print_data(replica, output)
        return
    lag = replica.get("lag_seconds")
    print_fields(
        [
            ("Pool", f"{replica.get('pool')} on node {replica.get('node')}"),
            ("State", status_style(replica.get("state", ""))),
            ("Interval", f"{replica['interval']} s" if replica.get("interval") else "only when asked"),
            ("Data as of", when(replica.get("last_success_at"))),
            ("Lag", f"{lag:.0f} s" if isinstance(lag, int | float) else "-"),
            ("Last transfer", f"{human_bytes(replica.get('bytes_last_transfer') or 0)} in "
                              f"{replica.get('seconds_last_transfer') or 0:.2f} s"
                              f"{' (full)' if replica.get('full_last_transfer') else ''}"),
            ("Last error", replica.get("last_error") or "-"),
        ]
    )  # fmt: skip


@volume.command("unreplicate", epilog=examples("hivemind volume unreplicate data"))
@click.argument("name")
@wait_option
@tenant_option
@output_option
@pass_session
def volume_unreplicate(session: Session, name: str, no_wait: bool, tenant_slug: str | None, output: str) -> None:
    """Stop replicating volume NAME and delete its copy."""
    target = VolumeTarget(session, tenant_slug)
    found = target.find(name)
    with not_found_as(f"volume {name}", tenant=target.tenant):
        started = target.client.delete(api_path("volumes", found["id"], "replica"))
    finish(target, started, what=f"Removing the replica of volume {name}", no_wait=no_wait, output=output)


@volume.command("promote", epilog=examples("hivemind volume promote data", "hivemind volume promote data --force"))
@click.argument("name")
@click.option("--force", is_flag=True, help="Even while the volume's node is ready (what it wrote since is lost).")
@wait_option
@tenant_option
@output_option
@pass_session
def volume_promote(
    session: Session, name: str, force: bool, no_wait: bool, tenant_slug: str | None, output: str
) -> None:
    """Make volume NAME's replica the volume (its data as of the last transfer) and run the apps
    mounting it on the replica's node: after the volume's node is lost."""
    target = VolumeTarget(session, tenant_slug)
    started = target.post(name, "promote", {"force": force})
    finish(target, started, what=f"Promoting the replica of volume {name}", no_wait=no_wait, output=output)


@volume.command("rm", epilog=examples("hivemind volume rm data", "hivemind volume rm data --yes --no-wait"))
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for the name again.")
@wait_option
@tenant_option
@output_option
@pass_session
def volume_rm(session: Session, name: str, yes: bool, no_wait: bool, tenant_slug: str | None, output: str) -> None:
    """Delete volume NAME and its snapshots, with their data. Refused (exit 7) while an app mounts it."""
    target = VolumeTarget(session, tenant_slug)
    started = target.delete(name, yes=yes)
    finish(target, started, what=f"Deleting volume {name}", no_wait=no_wait, output=output)


@volume.command("snapshot-rm", epilog=examples("hivemind volume snapshot-rm data before-upgrade"))
@click.argument("name")
@click.argument("snapshot")
@wait_option
@tenant_option
@output_option
@pass_session
def volume_snapshot_rm(
    session: Session, name: str, snapshot: str, no_wait: bool, tenant_slug: str | None, output: str
) -> None:
    """Delete snapshot SNAPSHOT of volume NAME (volumes cloned from it stay)."""
    target = VolumeTarget(session, tenant_slug)
    target.find(name)
    with not_found_as(f"tenant {target.tenant}"):
        page = target.client.get(api_path("snapshots"), {"volume": name, "name": snapshot, "tenant": target.tenant})
    rows = page.get("results", []) if isinstance(page, dict) else page
    found = next((row for row in rows if row.get("name") == snapshot), None)
    if found is None:
        from hivemind.cli.errors import not_found

        raise not_found(f"snapshot {snapshot} of volume {name}", target.tenant)
    with not_found_as(f"snapshot {snapshot}", tenant=target.tenant):
        started = target.client.delete(api_path("snapshots", found["id"]))
    finish(target, started, what=f"Deleting snapshot {snapshot} of {name}", no_wait=no_wait, output=output)


# hivemind pool ----------------------------------------------------------------------------------


@click.group(epilog=examples("hivemind pool ls", "hivemind pool add ceph --provider rbd ... --secret key"))
def pool() -> None:
    """Storage pools (platform staff): where volumes live, a provider in a directory of a node."""


@pool.command("ls", epilog=examples("hivemind pool ls", "hivemind pool ls -o json"))
@output_option
@pass_session
def pool_ls(session: Session, output: str) -> None:
    """List the storage pools: provider, node, capacity and free space, volumes."""
    client = session.client()
    pools = client.list_all(api_path("storage-pools"))
    if output != "table":
        print_data(pools, output)
        return
    rows = [
        (
            p["name"],
            p.get("status", ""),
            p.get("provider", ""),
            p.get("node", ""),
            human_bytes(p.get("capacity_bytes") or 0),
            human_bytes(p.get("free_bytes") or 0),
            str(p.get("volumes", 0)),
            "yes" if p.get("is_default") else "no",
            p.get("message") or "",
        )
        for p in pools
    ]
    print_table(
        ("NAME", "STATUS", "PROVIDER", "NODE", "CAPACITY", "FREE", "VOLUMES", "DEFAULT", "MESSAGE"),
        rows,
        styles={1: status_style},
        empty="No storage pools. `make run` makes one on its node; staff add more with `hivemind pool add`.",
    )


@pool.command(
    "add",
    epilog="\b\nSettings (--set) and secrets (--secret) of each provider:\n"
    "  local, btrfs  none\n"
    "  rbd           --set monitors=ADDRS user=NAME pool=RBD_POOL fs=xfs|ext4 prefix=P; --secret key\n"
    "  nfs           --set mode=managed address=NODE_IP port=2049 root_squash=true|false version=4.1|4.0\n"
    "                --set mode=external server=HOST export=/PATH port=2049 version=4.1|4.0|3\n"
    + examples(
        "hivemind pool add fast --provider btrfs --node edge-01 --path /srv/hivemind/fast",
        "hivemind pool add ceph --provider rbd --node edge-01 --path /var/lib/hivemind/rbd "
        "--set monitors=10.0.0.1:6789,10.0.0.2:6789 --set user=hivemind --set pool=volumes --secret key",
        "hivemind pool add shared --provider nfs --node edge-01 --path /srv/hivemind/nfs --set address=10.0.0.5",
    ),
)
@click.argument("name")
@click.option("--provider", required=True, type=click.Choice(["local", "btrfs", "rbd", "nfs"]),
              help="What holds the volumes.")  # fmt: skip
@click.option("--node", required=True, help="The node holding the pool's directory (shared pools: running its work).")
@click.option("--path", "path", required=True, metavar="DIR", help="The pool's directory on that node (absolute).")
@SET
@SECRET
@click.option("--default", "is_default", is_flag=True, help="Volumes that name no pool may go here.")
@output_option
@pass_session
def pool_add(session: Session, name: str, provider: str, node: str, path: str, config: dict, secrets: dict,
             is_default: bool, output: str) -> None:  # fmt: skip
    """Add a storage pool NAME, a DNS label (staff only). The server checks the provider's
    settings and names the bad one (exit 1); the node's agent then prepares the pool and reports
    its capacity (`hivemind pool ls` shows it ready, or why it is not). Secrets are sealed and
    never shown again."""
    _check_name(name)
    body = {"name": name, "provider": provider, "node": node, "path": path, "options": config,
            "is_default": is_default}  # fmt: skip
    if secrets:
        body["secrets"] = secrets
    created = session.client().post(api_path("storage-pools"), body)
    if output != "table":
        print_data(created, output)
        return
    click.echo(f"Added {provider} pool {style(created.get('name', name), bold=True)} on {node}: "
               "its node's agent prepares it within a heartbeat.")  # fmt: skip


@pool.command("rm", epilog=examples("hivemind pool rm fast", "hivemind pool rm fast --yes"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@pass_session
def pool_rm(session: Session, name: str, yes: bool) -> None:
    """Delete a storage pool (staff only). The server refuses (exit 7) while it holds volumes;
    nothing on the node is removed."""
    client = session.client()
    found = next((p for p in client.list_all(api_path("storage-pools")) if p.get("name") == name), None)
    if found is None:
        raise CliError(f"storage pool {name} not found", EXIT_NOT_FOUND)
    if not yes:
        confirm_typed(name, f"Type the name ({name}) to delete storage pool {name}", noun="name", refused="deleted")
    with not_found_as(f"storage pool {name}"):
        client.delete(api_path("storage-pools", found["id"]))
    click.echo(f"Deleted storage pool {name}.")
