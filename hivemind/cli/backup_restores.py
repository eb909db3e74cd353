"""`hivemind backup restore|restores` and `hivemind backup keys export|import`.

`restore BACKUP_ID` plans a restore (--dry-run: the plan only, nothing written) or starts one
(a workflow: configuration through the services, volumes' data and files on their nodes, apps
last); it prints the plan as a table (action, kind, name in the backup, name in the tenant) and
follows the workflow (unless --no-wait), exiting 1 naming the step that failed. `restores` lists them.

`keys export` writes the tenant's backup repository keys, encrypted under a passphrase asked
twice (hidden), to a file; `keys import` stores them on a new install. Keep the file apart from
the backups: with it and the passphrase, the backups open.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from hivemind.cli.backups import backup
from hivemind.cli.client import api_path
from hivemind.cli.errors import not_found_as, usage_error
from hivemind.cli.output import examples, output_option, print_data, print_table, status_style
from hivemind.cli.session import Session, pass_session
from hivemind.cli.tenants import tenant_option
from hivemind.cli.workflows import FINISHED, age_text, watch_workflow

POLL = 1.0
PLATFORM_KEYS = "hivemind-platform-backup-keys"
RENAME_KINDS = ("apps", "networks", "network_policies", "volumes", "notifiers", "alert_rules", "service_accounts")


def _names(value: str | None, flag: str) -> list[str]:
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    if value is not None and not names:
        raise usage_error(f"{flag}: give names separated by commas, e.g. {flag} web,db")
    return names


def _rename(values: tuple[str, ...]) -> dict:
    """--rename apps:old=new ... as {kind: {old: new}}."""
    mapping: dict[str, dict[str, str]] = {}
    for value in values:
        kind, _, pair = value.partition(":")
        old, _, new = pair.partition("=")
        if kind not in RENAME_KINDS or not old or not new:
            raise usage_error(f"--rename: expected KIND:OLD=NEW with KIND one of {', '.join(RENAME_KINDS)}, "
                              f"got {value[:60]!r}")  # fmt: skip
        mapping.setdefault(kind, {})[old] = new
    return mapping


def _files(values: tuple[str, ...], into_volume: str | None, into_path: str | None) -> dict:
    """--files VOLUME:PATH ... (one volume) as the selection's files."""
    volumes, paths = set(), []
    for value in values:
        volume, _, path = value.partition(":")
        if not volume or not path.startswith("/"):
            raise usage_error(f"--files: expected VOLUME:/PATH, got {value[:60]!r}")
        volumes.add(volume)
        paths.append(path)
    if len(volumes) > 1:
        raise usage_error("--files: one volume per restore")
    files = {"volume": volumes.pop(), "paths": paths}
    if into_volume:
        files["into_volume"] = into_volume
    if into_path:
        files["into_path"] = into_path
    return files


def print_plan(plan: list[dict]) -> None:
    rows = [(a.get("action", ""), a.get("kind", ""), a.get("source", ""), a.get("name", ""),
             "; ".join(a.get("warnings") or []) or a.get("reason", "")) for a in plan]  # fmt: skip
    print_table(("ACTION", "KIND", "FROM", "TO", "WHY"), rows, empty="Nothing to restore.")


@backup.command(
    "restore",
    epilog=examples(
        "hivemind backup restore 12 --dry-run",
        "hivemind backup restore 12 --into-tenant staging --rename apps:web=web-copy",
        "hivemind backup restore 12 --apps web --conflicts rename",
        "hivemind backup restore 12 --files data:/etc/app.conf --files data:/uploads --into-path /restored",
    ),
)
@click.argument("backup_id", metavar="BACKUP_ID", type=click.IntRange(min=1))
@click.option("--into-tenant", metavar="SLUG", help="The tenant to restore into (default: the current tenant).")
@click.option("--apps", metavar="A,B", help="Only these apps (with the networks and volumes they use).")
@click.option("--volumes", metavar="V1,V2", help="Only these volumes (definitions and data).")
@click.option("--files", "files", multiple=True, metavar="VOLUME:PATH", help="Only these files or directories.")
@click.option("--into-volume", metavar="NAME", help="With --files: the volume to restore them into (default: theirs).")
@click.option("--into-path", metavar="PATH", help="With --files: the directory in it (default /restored).")
@click.option("--rename", multiple=True, metavar="KIND:OLD=NEW", help="A new name, e.g. apps:web=web2 (repeatable).")
@click.option("--conflicts", type=click.Choice(["skip", "replace", "rename"]), default="skip", show_default=True,
              help="What happens to an object whose name exists in the tenant.")  # fmt: skip
@click.option("--at", metavar="TIME", help="Point in time (ISO 8601): the newest backup before it, apps as then.")
@click.option("--dry-run", is_flag=True, help="Show the plan only: nothing is written.")
@click.option("--no-wait", "no_wait", is_flag=True, help="Return once the restore started; do not follow it.")
@tenant_option
@output_option
@pass_session
def restore(session: Session, backup_id: int, into_tenant: str | None, apps: str | None, volumes: str | None,
            files: tuple[str, ...], into_volume: str | None, into_path: str | None, rename: tuple[str, ...],
            conflicts: str, at: str | None, dry_run: bool, no_wait: bool, tenant_slug: str | None,
            output: str) -> None:  # fmt: skip
    """Restore a backup, or part of it, into a tenant: prints the plan (what is created,
    replaced, skipped), then starts it unless --dry-run."""
    if files and (apps is not None or volumes is not None):
        raise usage_error("--files restores files only: leave out --apps and --volumes")
    if (into_volume or into_path) and not files:
        raise usage_error("--into-volume and --into-path go with --files")
    selection: dict = {}
    if files:
        selection = {"files": _files(files, into_volume, into_path)}
    else:
        if apps is not None:
            selection["apps"] = _names(apps, "--apps")
        if volumes is not None:
            selection["volumes"] = _names(volumes, "--volumes")
    tenant = into_tenant or session.tenant(tenant_slug)
    body = {"tenant": tenant, "backup": backup_id, "selection": selection, "rename": _rename(rename),
            "conflicts": conflicts, "dry_run": dry_run, **({"at": at} if at else {})}  # fmt: skip
    client = session.client(tenant=tenant)  # the restore and its workflow are the target tenant's
    with not_found_as(f"backup {backup_id}", tenant=tenant):
        started = client.post(api_path("restores"), body)
    if output != "table" and (dry_run or no_wait):
        print_data(started, output)
        return
    if output == "table":
        print_plan(started.get("plan") or [])
    if dry_run:
        if output == "table":
            click.echo("Dry run: nothing was written.")
        return
    number, workflow = started.get("id"), started.get("workflow")
    if no_wait:
        click.echo(f"Restore {number} started: workflow {workflow}; `hivemind backup restores` shows it.")
        return
    if output == "table":
        click.echo(f"Restore {number}: workflow {workflow}")
        code = watch_workflow(client, workflow)
        found = client.get(api_path("restores", number))
        click.echo(f"Restore {number} {status_style(found.get('status', ''))}."
                   + (f" {found['error']}" if found.get("error") else ""))  # fmt: skip
    else:
        found = client.get(api_path("restores", number))
        while found.get("workflow_state") not in FINISHED:
            time.sleep(POLL)
            found = client.get(api_path("restores", number))
        code = 0 if found.get("status") == "succeeded" else 1
        print_data(found, output)
    sys.exit(code)


@backup.command("restores", epilog=examples("hivemind backup restores", "hivemind backup restores -o json"))
@tenant_option
@output_option
@pass_session
def restores_ls(session: Session, tenant_slug: str | None, output: str) -> None:
    """List the restores into the tenant, newest first."""
    tenant = session.tenant(tenant_slug)
    with not_found_as(f"tenant {tenant}"):
        found = session.client().list_all(api_path("restores"), {"tenant": tenant})
    if output != "table":
        print_data(found, output)
        return
    rows = [
        (str(r["id"]), str(r.get("backup") or "-"), "dry run" if r.get("dry_run") else "restore",
         r.get("status", ""), str(len(r.get("plan") or [])), age_text(r.get("created_at")))
        for r in found
    ]  # fmt: skip
    print_table(("ID", "BACKUP", "KIND", "STATUS", "ACTIONS", "AGE"), rows, styles={3: status_style},
                empty=f"No restores in tenant {tenant}.")  # fmt: skip


@backup.group(
    "keys",
    epilog=examples(
        "hivemind backup keys export --out shop-keys.json --tenant shop",
        "hivemind backup keys import shop-keys.json --tenant shop",
    ),
)
def keys_group() -> None:
    """Disaster-recovery keys: the tenant's backup repository keys under a passphrase."""


def _passphrase(stdin: bool, confirm: bool) -> str:
    if stdin:
        value = sys.stdin.readline().rstrip("\n")
    else:
        value = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    if not value:
        raise usage_error("the passphrase is empty")
    return value


@keys_group.command(
    "export",
    epilog=examples(
        "hivemind backup keys export --out shop-keys.json", "hivemind backup keys export --all --out all.json"
    ),
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The file to write (mode 0600).")
@click.option("--passphrase-stdin", is_flag=True, help="Read the passphrase from standard input (scripts).")
@click.option("--all", "every", is_flag=True, help="Every tenant's keys and names (platform staff): the platform's.")
@tenant_option
@pass_session
def keys_export(session: Session, out: str, passphrase_stdin: bool, every: bool, tenant_slug: str | None) -> None:
    """Write the tenant's backup repository keys, encrypted under a passphrase (asked twice),
    to a file. Tenant admins and owners only. With --all (platform staff), every tenant's: with
    it a new install makes the tenants again (`keys import`) and restores the platform
    (`backup restore-platform`)."""
    if every and tenant_slug:
        raise usage_error("--all exports every tenant's keys: leave out --tenant")
    tenant = None if every else session.tenant(tenant_slug)
    passphrase = _passphrase(passphrase_stdin, confirm=True)
    if every:
        document = session.client().post(api_path("platform-backup-locations", "export-keys"),
                                          {"passphrase": passphrase})  # fmt: skip
    else:
        with not_found_as(f"tenant {tenant}"):
            document = session.client().post(api_path("restores", "export-keys"),
                                              {"tenant": tenant, "passphrase": passphrase})  # fmt: skip
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise usage_error(f"--out: {out} exists; choose another name") from None
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    if every:
        parts = document.get("tenants") or []
        count = sum(len(part.get("repositories") or []) for part in parts)
        click.echo(f"{count} repository key(s) of {len(parts)} tenant(s) written to {out}: keep it apart from the "
                   "backups.")  # fmt: skip
        return
    count = len(document.get("repositories") or [])
    click.echo(f"{count} repository key(s) of tenant {tenant} written to {out}: keep it apart from the backups.")


@keys_group.command("import", epilog=examples("hivemind backup keys import shop-keys.json --tenant shop"))
@click.argument("file", type=click.File("r"))
@click.option("--passphrase-stdin", is_flag=True, help="Read the passphrase from standard input (scripts).")
@tenant_option
@pass_session
def keys_import(session: Session, file, passphrase_stdin: bool, tenant_slug: str | None) -> None:
    """Store the backup repository keys of an exported file for the tenant (a new install). A
    file of every tenant's keys (`export --all`; platform staff) makes the tenants this install
    lacks and stores each one's keys."""
    try:
        document = json.load(file)
    except ValueError as exc:
        raise usage_error(f"{file.name}: not JSON: {exc}") from None
    if isinstance(document, dict) and document.get("format") == PLATFORM_KEYS:
        if tenant_slug:
            raise usage_error(f"{file.name} holds every tenant's keys: leave out --tenant")
        passphrase = _passphrase(passphrase_stdin, confirm=False)
        done = session.client().post(api_path("platform-backup-locations", "import-keys"),
                                     {"passphrase": passphrase, "document": document})  # fmt: skip
        for part in done.get("tenants") or []:
            made = "made, " if part.get("created") else ""
            click.echo(f"tenant {part.get('tenant')}: {made}{len(part.get('repositories') or [])} repository key(s)")
        return
    tenant = session.tenant(tenant_slug)
    passphrase = _passphrase(passphrase_stdin, confirm=False)
    with not_found_as(f"tenant {tenant}"):
        done = session.client().post(api_path("restores", "import-keys"),
                                     {"tenant": tenant, "passphrase": passphrase, "document": document})  # fmt: skip
    repositories = done.get("repositories") or []
    click.echo(f"{len(repositories)} repository key(s) imported into tenant {tenant}: {', '.join(repositories)}")


@backup.command(
    "restore-platform",
    epilog=examples(
        "hivemind backup restore-platform shared --dry-run",
        "hivemind backup restore-platform shared --tenants shop,staging",
    ),
)
@click.argument("location")
@click.option("--tenants", metavar="A,B", help="Only these tenants (default: every tenant with a repository there).")
@click.option("--conflicts", type=click.Choice(["skip", "replace", "rename"]), default="replace", show_default=True,
              help="As a restore's; replace brings the tenants' settings and quotas back too.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Plan each tenant's restore; start none.")
@click.option("--no-wait", "no_wait", is_flag=True, help="Return once the restores started; do not follow them.")
@output_option
@pass_session
def restore_platform(session: Session, location: str, tenants: str | None, conflicts: str, dry_run: bool,
                     no_wait: bool, output: str) -> None:  # fmt: skip
    """Disaster recovery of the platform (platform staff): from platform location LOCATION,
    restore every tenant's newest backup into it — settings, quota, members, apps, networks,
    volumes. First `hivemind backup keys import` the file `keys export --all` wrote (it makes
    the tenants) and add the location again (`backup location add --platform`). Follows each
    restore unless --no-wait; exits 1 when any tenant could not be restored."""
    from hivemind.cli.backups import PlatformLocationTarget

    target = PlatformLocationTarget(session)
    body: dict = {"conflicts": conflicts, "dry_run": dry_run}
    if tenants is not None:
        body["tenants"] = _names(tenants, "--tenants")
    answer = target.post(location, "restore", body)
    entries = answer.get("tenants") or []
    if output != "table":
        print_data(answer, output)
    else:
        state = "planned" if dry_run else "started"
        rows = [(e.get("tenant", ""), str(e.get("backup") or "-"), str(e.get("restore") or "-"),
                 str(e.get("actions", "-")), e.get("skipped") or e.get("error") or state) for e in entries]  # fmt: skip
        print_table(("TENANT", "BACKUP", "RESTORE", "ACTIONS", "STATE"), rows,
                    empty=f"No tenant has a repository in {location} with its key here.")  # fmt: skip
    failed = any("error" in e for e in entries)
    if dry_run or no_wait:
        sys.exit(1 if failed else 0)
    for entry in entries:
        if not entry.get("workflow"):
            continue
        client = session.client(tenant=entry["tenant"])
        if output == "table":
            click.echo(f"Tenant {entry['tenant']}: restore {entry['restore']}, workflow {entry['workflow']}")
            code = watch_workflow(client, entry["workflow"])
        else:
            found = client.get(api_path("restores", entry["restore"]))
            while found.get("workflow_state") not in FINISHED:
                time.sleep(POLL)
                found = client.get(api_path("restores", entry["restore"]))
            code = 0 if found.get("status") == "succeeded" else 1
        failed = failed or code != 0
    sys.exit(1 if failed else 0)
