"""`hivemind backup run|ls|info|files|rm`: the tenant's backup runs.

`run` starts one (a workflow: the configuration document on the control plane, each volume's
data read and uploaded by the node holding it); it follows the workflow step by
step and exits 1 naming the step that failed. Runs are known by their number (`ls`).
"""

from __future__ import annotations

import sys
import time

import click

from hivemind.cli.apps import Target
from hivemind.cli.backups import backup
from hivemind.cli.client import api_path
from hivemind.cli.errors import not_found_as, usage_error
from hivemind.cli.output import (
    examples,
    human_bytes,
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
from hivemind.cli.workflows import FINISHED, age_text, seconds_text, watch_workflow

POLL = 1.0  # seconds between looks at a run followed with -o json
backup_id_argument = click.argument("backup_id", metavar="ID", type=click.IntRange(min=1))


class BackupTarget(Target):
    resource, noun = "backups", "backup"

    def by_id(self, backup_id: int, action: str = "", params: dict | None = None):
        with not_found_as(f"backup {backup_id}", tenant=self.tenant):
            return self.client.get(api_path("backups", backup_id, action), params)


def _names(value: str | None, flag: str) -> list[str]:
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    if value is not None and not names:
        raise usage_error(f"{flag}: give names separated by commas, e.g. {flag} web,db")
    return names


def _ratio(found: dict) -> str:
    return f"{found.get('dedup_ratio', 0):.1f}x" if found.get("bytes_new") else "-"


def _what(found: dict) -> str:
    names = found.get("names") or []
    return f"{found.get('scope', '')}: {', '.join(names)}" if names else found.get("scope", "")


@backup.command(
    "run",
    epilog=examples(
        "hivemind backup run --location nightly",
        "hivemind backup run --location offsite --apps web,db",
        "hivemind backup run --location nightly --volumes data",
    ),
)
@click.option("--location", required=True, metavar="NAME", help="The backup location to store it in.")
@click.option("--apps", metavar="A,B", help="Only these apps (their configuration and the volumes they mount).")
@click.option("--volumes", metavar="V1,V2", help="Only these volumes (their definitions and data).")
@click.option("--no-wait", "no_wait", is_flag=True, help="Return once the run started; do not follow it.")
@tenant_option
@output_option
@pass_session
def run(session: Session, location: str, apps: str | None, volumes: str | None, no_wait: bool,
        tenant_slug: str | None, output: str) -> None:  # fmt: skip
    """Back up the tenant now: its configuration and every volume's data, or only --apps or
    --volumes. Volumes are read on the node that holds them and only data the location's
    repository lacks is uploaded."""
    if apps is not None and volumes is not None:
        raise usage_error("give --apps or --volumes, not both")
    scope, names = "tenant", []
    if apps is not None:
        scope, names = "apps", _names(apps, "--apps")
    elif volumes is not None:
        scope, names = "volumes", _names(volumes, "--volumes")
    target = BackupTarget(session, tenant_slug)
    body = {"tenant": target.tenant, "location": location, "scope": scope, "names": names}
    with not_found_as(f"tenant {target.tenant}"):
        started = target.client.post(api_path("backups"), body)
    number, workflow = started.get("id"), started.get("workflow")
    if no_wait:
        if output != "table":
            print_data(started, output)
        else:
            click.echo(f"Backup {number} into {location} started: workflow {workflow}; "
                       f"`hivemind backup info {number}` shows its progress.")  # fmt: skip
        return
    if output == "table":
        click.echo(f"Backup {number} into {location}: workflow {workflow}")
        code = watch_workflow(target.client, workflow)  # a line per step as it changes (a bar on a terminal)
        found = target.by_id(number)
    else:  # json/yaml: the finished backup only
        found = target.by_id(number)
        while found.get("workflow_state") not in FINISHED:
            time.sleep(POLL)
            found = target.by_id(number)
        code = 0 if found.get("status") == "succeeded" else 1
        print_data(found, output)
    if output == "table" and code == 0:
        click.echo(f"Backup {number} {status_style(found.get('status', ''))}: {found.get('files', 0)} files, "
                   f"{human_bytes(found.get('bytes_read', 0))} read, {human_bytes(found.get('bytes_new', 0))} "
                   f"new stored (dedup {_ratio(found)}).")  # fmt: skip
    sys.exit(code)


@backup.command("ls", epilog=examples("hivemind backup ls", "hivemind backup ls --status failed -o json"))
@click.option("--status", type=click.Choice(["pending", "running", "succeeded", "failed", "deleting"]))
@click.option("--location", metavar="NAME", help="Only those stored in this location.")
@tenant_option
@output_option
@pass_session
def backup_ls(session: Session, status: str | None, location: str | None, tenant_slug: str | None,
              output: str) -> None:  # fmt: skip
    """List the tenant's backups, newest first: what, where, state, sizes and dedup."""
    target = BackupTarget(session, tenant_slug)
    params = {"tenant": target.tenant, **({"status": status} if status else {}),
              **({"location": location} if location else {})}  # fmt: skip
    with not_found_as(f"tenant {target.tenant}"):
        found = target.client.list_all(api_path("backups"), params)
    if output != "table":
        print_data(found, output)
        return
    rows = [
        (str(b["id"]), _what(b), b.get("location", ""), b.get("status", ""), str(b.get("files", 0)),
         human_bytes(b.get("bytes_read", 0)), human_bytes(b.get("bytes_new", 0)), _ratio(b),
         age_text(b.get("created_at")))
        for b in found
    ]  # fmt: skip
    print_table(("ID", "WHAT", "LOCATION", "STATUS", "FILES", "READ", "NEW", "DEDUP", "AGE"), rows,
                styles={3: status_style}, empty=f"No backups in tenant {target.tenant}.")  # fmt: skip


@backup.command("info", epilog=examples("hivemind backup info 12"))
@backup_id_argument
@tenant_option
@output_option
@pass_session
def backup_info(session: Session, backup_id: int, tenant_slug: str | None, output: str) -> None:
    """Show one backup: its state, workflow, per-volume figures and, when it failed, why."""
    target = BackupTarget(session, tenant_slug)
    found = target.by_id(backup_id)
    if output != "table":
        print_data(found, output)
        return
    print_fields(
        [
            ("Backup", str(found["id"])),
            ("Tenant", found.get("tenant", "")),
            ("What", _what(found)),
            ("Location", found.get("location", "")),
            ("Policy", found.get("policy") or "- (on demand)"),
            ("Status", status_style(found.get("status", ""))),
            ("Workflow", f"{found.get('workflow')} ({found.get('workflow_state')})" if found.get("workflow") else "-"),
            ("Started", when(found.get("started_at")) if found.get("started_at") else "-"),
            ("Duration", seconds_text(found.get("duration_seconds"))),
            ("Files", str(found.get("files", 0))),
            ("Read", human_bytes(found.get("bytes_read", 0))),
            ("New stored", f"{human_bytes(found.get('bytes_new', 0))} (dedup {_ratio(found)})"),
            ("Verified", found.get("verified", "")),
            *((("Error", found["error"]),) if found.get("error") else ()),
        ]
    )
    volumes = found.get("volumes") or []
    if volumes:
        click.echo()
        rows = [
            (v.get("name", ""), v.get("node", ""), v.get("state", ""), str(v.get("files", 0)),
             human_bytes(v.get("bytes_read", 0)), human_bytes(v.get("bytes_new", 0)),
             "yes" if v.get("encrypted") else "no")
            for v in volumes
        ]  # fmt: skip
        print_table(("VOLUME", "NODE", "STATE", "FILES", "READ", "NEW", "ENCRYPTED"), rows, styles={2: status_style})


@backup.command("files", epilog=examples("hivemind backup files 12 --volume data", "hivemind backup files 12 "
                                         "--volume data /logs"))  # fmt: skip
@backup_id_argument
@click.argument("path", required=False, default="")
@click.option("--volume", required=True, metavar="NAME", help="The volume of the backup to browse.")
@tenant_option
@output_option
@pass_session
def backup_files(session: Session, backup_id: int, path: str, volume: str, tenant_slug: str | None,
                 output: str) -> None:  # fmt: skip
    """List a directory (default: the root) of a volume as backup ID holds it."""
    target = BackupTarget(session, tenant_slug)
    answer = target.client.get(api_path("backups", backup_id, "files"), {"volume": volume, "path": path})
    if output != "table":
        print_data(answer, output)
        return
    rows = [
        (e.get("mode", ""), e.get("type", ""), human_bytes(e.get("size", 0)) if e.get("type") == "file" else "-",
         e["path"] + (f" -> {e['target']}" if e.get("target") else ""))
        for e in answer.get("entries", [])
    ]  # fmt: skip
    print_table(("MODE", "TYPE", "SIZE", "PATH"), rows, empty=f"{path or '/'} is empty in backup {backup_id}.")


@backup.command("rm", epilog=examples("hivemind backup rm 12"))
@backup_id_argument
@tenant_option
@pass_session
def backup_rm(session: Session, backup_id: int, tenant_slug: str | None) -> None:
    """Remove backup ID: its snapshots are forgotten in the location's repository (their data
    goes at the repository's next prune) and its record is removed. A running one is refused
    (exit 7): cancel its workflow first."""
    target = BackupTarget(session, tenant_slug)
    with not_found_as(f"backup {backup_id}", tenant=target.tenant):
        target.client.delete(api_path("backups", backup_id))
    click.echo(f"Removed backup {style(str(backup_id), bold=True)} from tenant {target.tenant}.")
