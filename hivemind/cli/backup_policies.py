"""`hivemind backup policy create|ls|info|update|rm`, `hivemind backup verify --policy` and
`hivemind backup prune --policy`: the tenant's backup policies.

A policy says what to back up (the tenant, --apps or --volumes), into which location, when
(--schedule, cron in UTC) and how many backups to keep (--keep-*); --verify-schedule verifies
its location's repository on its own schedule. The server checks every value and names the one
that is wrong (exit 1). `verify` starts a workflow and follows it (--no-wait does not); `prune` applies the
retention at once.
"""

from __future__ import annotations

import sys

import click

from hivemind.cli.apps import Target
from hivemind.cli.backup_runs import _names
from hivemind.cli.backups import backup
from hivemind.cli.client import api_path
from hivemind.cli.errors import not_found_as, usage_error
from hivemind.cli.networks import _check_name
from hivemind.cli.output import examples, output_option, print_data, print_fields, print_table, style, when
from hivemind.cli.session import Session, pass_session
from hivemind.cli.tenants import tenant_option
from hivemind.cli.workflows import watch_workflow

KEEPS = ("last", "hourly", "daily", "weekly", "monthly")


class PolicyTarget(Target):
    resource, noun = "backup-policies", "backup policy"


def _what(found: dict) -> str:
    names = found.get("names") or []
    return f"{found.get('scope', '')}: {', '.join(names)}" if names else found.get("scope", "")


def _keeps(found: dict) -> str:
    kept = [f"{k} {found[f'keep_{k}']}" for k in KEEPS if found.get(f"keep_{k}")]
    return ", ".join(kept) or "all"


def _verify_text(found: dict) -> str:
    if not found.get("verify_schedule"):
        return "-"
    return f"{found['verify_schedule']} (UTC), reading {found.get('verify_read_percent', 0)}%"


def policy_options(func):
    """The options `create` and `update` share (None: not given)."""
    options = [
        click.option("--location", metavar="NAME", help="The backup location its backups go to."),
        click.option("--apps", metavar="A,B", help="Back up these apps (their configuration and volumes they mount)."),
        click.option("--volumes", metavar="V1,V2", help="Back up these volumes (their definitions and data)."),
        click.option("--tenant-wide", is_flag=True, help="Back up the whole tenant (the default on create)."),
        click.option("--schedule", metavar="CRON", help="When, as cron in UTC, e.g. '0 3 * * *'; '' for none."),
        *(
            click.option(f"--keep-{k}", f"keep_{k}", type=click.IntRange(min=0), help=f"Backups kept by {k}.")
            for k in KEEPS
        ),
        click.option("--verify-schedule", metavar="CRON", help="When to verify its location's repository (cron, UTC)."),
        click.option(
            "--verify-read-percent",
            type=click.IntRange(0, 100),
            help="Share of the data a scheduled verify downloads and checks (0: structure only).",
        ),
        click.option("--enable/--disable", "enabled", default=None, help="Run its schedules, or pause them."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _body(location, apps, volumes, tenant_wide, schedule, verify_schedule, verify_read_percent, enabled,
          keeps: dict) -> dict:  # fmt: skip
    if sum(x is not None and x is not False for x in (apps, volumes, tenant_wide or None)) > 1:
        raise usage_error("give one of --apps, --volumes or --tenant-wide")
    body: dict = {}
    if apps is not None:
        body.update(scope="apps", names=_names(apps, "--apps"))
    elif volumes is not None:
        body.update(scope="volumes", names=_names(volumes, "--volumes"))
    elif tenant_wide:
        body.update(scope="tenant", names=[])
    given = {"location": location, "schedule": schedule, "verify_schedule": verify_schedule,
             "verify_read_percent": verify_read_percent, "enabled": enabled, **keeps}  # fmt: skip
    body.update({k: v for k, v in given.items() if v is not None})
    return body


@backup.group(
    "policy",
    epilog=examples(
        "hivemind backup policy create nightly --location offsite --schedule '0 3 * * *' --keep-daily 7 "
        "--keep-weekly 4",
        "hivemind backup policy create db --location offsite --apps db --schedule '0 * * * *' --keep-last 24",
        "hivemind backup policy ls",
    ),
)
def policy() -> None:
    """Backup policies: what to back up, where, when (cron, UTC) and how many backups to keep.

    Viewers may look (ls, info); operators and above create, change and remove them."""


CREATE_EXAMPLE = (
    "hivemind backup policy create nightly --location offsite --schedule '0 3 * * *' --keep-last 7 "
    "--verify-schedule '0 5 * * 0'"
)


@policy.command("create", epilog=examples(CREATE_EXAMPLE))
@click.argument("name")
@policy_options
@tenant_option
@output_option
@pass_session
def policy_create(session: Session, name: str, location: str | None, apps, volumes, tenant_wide, schedule,
                  verify_schedule, verify_read_percent, enabled, tenant_slug, output, **keeps) -> None:  # fmt: skip
    """Create backup policy NAME. Without --schedule it runs only on demand (`hivemind backup
    policy run` is the API's POST .../run/); with one, at least one --keep-* count is needed."""
    if location is None:
        raise usage_error("--location is required: the backup location its backups go to")
    body = _body(location, apps, volumes, tenant_wide, schedule, verify_schedule, verify_read_percent, enabled,
                 keeps)  # fmt: skip
    target = PolicyTarget(session, tenant_slug)
    with not_found_as(f"tenant {target.tenant}"):
        created = target.client.post(api_path("backup-policies"), {"tenant": target.tenant, "name": name, **body})
    if output != "table":
        print_data(created, output)
        return
    when_text = f"at '{created['schedule']}' UTC" if created.get("schedule") else "on demand"
    click.echo(f"Created backup policy {style(name, bold=True)} in tenant {target.tenant}: {_what(created)} into "
               f"{created.get('location')}, {when_text}, keeping {_keeps(created)}.")  # fmt: skip


@policy.command("ls", epilog=examples("hivemind backup policy ls", "hivemind backup policy ls -o json"))
@tenant_option
@output_option
@pass_session
def policy_ls(session: Session, tenant_slug: str | None, output: str) -> None:
    """List the tenant's backup policies: what, where, when, what they keep, the last run."""
    target = PolicyTarget(session, tenant_slug)
    found = target.all()
    if output != "table":
        print_data(found, output)
        return
    rows = [
        (p["name"], _what(p), p.get("location", ""), p.get("schedule") or "-", _keeps(p),
         p.get("verify_schedule") or "-", "yes" if p.get("enabled") else "no",
         when(p["last_success_at"]) if p.get("last_success_at") else "-")
        for p in found
    ]  # fmt: skip
    print_table(("NAME", "WHAT", "LOCATION", "SCHEDULE", "KEEP", "VERIFY", "ENABLED", "LAST SUCCESS"), rows,
                empty=f"No backup policies in tenant {target.tenant}.")  # fmt: skip


@policy.command("info", epilog=examples("hivemind backup policy info nightly"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def policy_info(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    """Show one backup policy."""
    target = PolicyTarget(session, tenant_slug)
    found = target.get(name)
    if output != "table":
        print_data(found, output)
        return
    print_fields(
        [
            ("Name", found.get("name", "")),
            ("Tenant", found.get("tenant", "")),
            ("What", _what(found)),
            ("Location", found.get("location", "")),
            ("Schedule", f"{found['schedule']} (UTC)" if found.get("schedule") else "on demand"),
            ("Keep", _keeps(found)),
            ("Verify", _verify_text(found)),
            ("Enabled", "yes" if found.get("enabled") else "no"),
            ("Last success", when(found["last_success_at"]) if found.get("last_success_at") else "-"),
            ("Last failure", when(found["last_failure_at"]) if found.get("last_failure_at") else "-"),
            ("Created", when(found.get("created_at"))),
        ]
    )


@policy.command("update", epilog=examples("hivemind backup policy update nightly --keep-daily 14",
                                          "hivemind backup policy update nightly --disable"))  # fmt: skip
@click.argument("name")
@click.option("--rename", metavar="NEW", help="A new name.")
@policy_options
@tenant_option
@output_option
@pass_session
def policy_update(session: Session, name: str, rename: str | None, location, apps, volumes, tenant_wide, schedule,
                  verify_schedule, verify_read_percent, enabled, tenant_slug, output, **keeps) -> None:  # fmt: skip
    """Change what is given; the whole policy is checked again and its schedules follow."""
    body = _body(location, apps, volumes, tenant_wide, schedule, verify_schedule, verify_read_percent, enabled,
                 keeps)  # fmt: skip
    if rename:
        body["name"] = _check_name(rename, "--rename")
    if not body:
        raise usage_error("nothing to change: give an option to change (see --help)")
    target = PolicyTarget(session, tenant_slug)
    found = target.find(name)
    with not_found_as(f"backup policy {name}", tenant=target.tenant):
        changed = target.client.request("PATCH", api_path("backup-policies", found["id"]), json=body)
    if output != "table":
        print_data(changed, output)
        return
    click.echo(f"Updated backup policy {style(changed.get('name', name), bold=True)} in tenant {target.tenant}.")


@policy.command("rm", epilog=examples("hivemind backup policy rm nightly --yes"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@tenant_option
@pass_session
def policy_rm(session: Session, name: str, yes: bool, tenant_slug: str | None) -> None:
    """Remove a backup policy and its schedules. Its backups stay (no longer pruned by it)."""
    target = PolicyTarget(session, tenant_slug)
    target.delete(name, yes=yes)
    click.echo(f"Removed backup policy {name} from tenant {target.tenant}.")


@backup.command("verify", epilog=examples("hivemind backup verify --policy nightly --read-percent 10",
                                          "hivemind backup verify --policy nightly --read-data",
                                          "hivemind backup verify 12 --read-data"))  # fmt: skip
@click.argument("backup_id", metavar="[BACKUP_ID]", required=False, type=click.IntRange(min=1))
@click.option("--policy", "policy_name", metavar="NAME", help="Verify this policy's location.")
@click.option("--read-data", is_flag=True, help="Download and check every pack (all the data).")
@click.option("--read-percent", type=click.IntRange(1, 100), help="Download and check this share of the packs.")
@click.option("--no-wait", "no_wait", is_flag=True, help="Return once the verification started; do not follow it.")
@tenant_option
@output_option
@pass_session
def backup_verify(session: Session, backup_id: int | None, policy_name: str | None, read_data: bool,
                  read_percent: int | None, no_wait: bool, tenant_slug: str | None, output: str) -> None:  # fmt: skip
    """Verify the repository of a policy's location (--policy) or the one backup BACKUP_ID is in:
    its structure, and with --read-data or --read-percent the data itself. Backups there are
    marked ok or damaged (`hivemind backup info` names the files affected). With --policy and
    neither flag, the policy's verify_read_percent is read."""
    if read_data and read_percent is not None:
        raise usage_error("give --read-data or --read-percent, not both")
    if (backup_id is None) == (policy_name is None):
        raise usage_error("name a backup (BACKUP_ID) or a policy (--policy NAME), one of them")
    body = {"read_data": True} if read_data else {"read_percent": read_percent} if read_percent else {}
    target = PolicyTarget(session, tenant_slug)
    if backup_id is not None:
        with not_found_as(f"backup {backup_id}", tenant=target.tenant):
            started = target.client.post(api_path("backups", backup_id, "verify"), body)
    else:
        started = target.post(policy_name, "verify", body)
    workflow = started.get("workflow")
    if no_wait:
        if output != "table":
            print_data(started, output)
        else:
            click.echo(f"Verifying backup location {started.get('location')}: workflow {workflow}.")
        return
    code = watch_workflow(target.client, workflow, output=output)
    if code != 0:
        sys.exit(code)
    with not_found_as(f"tenant {target.tenant}"):
        backups = target.client.list_all(api_path("backups"), {"tenant": target.tenant,
                                                               "location": started.get("location")})  # fmt: skip
    damaged = [b for b in backups if b.get("verified") == "damaged"]
    if output == "table":
        if damaged:
            click.echo(f"Damaged backups in {started.get('location')}: {', '.join(str(b['id']) for b in damaged)} "
                       "(`hivemind backup info ID` names the files).", err=True)  # fmt: skip
        else:
            click.echo(f"Backup location {started.get('location')}: every backup verified ok.")
    sys.exit(1 if damaged else 0)


@backup.command("prune", epilog=examples("hivemind backup prune --policy nightly"))
@click.option("--policy", "policy_name", required=True, metavar="NAME", help="Apply this policy's retention.")
@tenant_option
@output_option
@pass_session
def backup_prune(session: Session, policy_name: str, tenant_slug: str | None, output: str) -> None:
    """Apply a policy's retention now: the backups its --keep-* counts do not keep are forgotten
    and removed, then the location's repository is pruned (their data deleted)."""
    target = PolicyTarget(session, tenant_slug)
    answer = target.post(policy_name, "prune")
    if output != "table":
        print_data(answer, output)
        return
    removed = answer.get("removed") or []
    freed = (answer.get("prune") or {}).get("bytes_freed", 0)
    click.echo(f"Policy {policy_name}: kept {len(answer.get('kept') or [])} backups, removed {len(removed)}"
               f"{': ' + ', '.join(str(r) for r in removed) if removed else ''}; {freed} bytes freed.")  # fmt: skip
