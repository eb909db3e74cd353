"""`hivemind backup`: backups of a tenant. Today its locations (`hivemind backup location`):
where backup repositories live — a directory, an S3-compatible bucket, an Azure Blob container
or a Google Cloud Storage bucket.

Locations are found by name in the tenant (the context's, or --tenant); with --platform, among
the platform's (platform staff's: every tenant may back up into one by name). Settings are
`--set KEY=VALUE`; credentials `--secret KEY=VALUE`, or `--secret KEY` alone to type the value
at a hidden prompt (or read it from standard input), which keeps it out of the shell's history
and the process list. The server seals credentials and never shows them again.
"""

from __future__ import annotations

import click

from hivemind.cli.apps import Target
from hivemind.cli.client import api_path
from hivemind.cli.errors import not_found, not_found_as, usage_error
from hivemind.cli.networks import _check_name
from hivemind.cli.notifiers import SECRET, SET, _value_text, patch_settings
from hivemind.cli.output import (
    examples,
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

KINDS = ("local", "s3", "azure", "gcs")
KIND_HELP = (
    "\b\nSettings (--set) and credentials (--secret) of each kind:\n"
    "  local  --set path=DIR (relative: under the tenant's backup directory on the server)\n"
    "  s3     --set bucket=B prefix=P endpoint_url=URL region=R addressing_style=path|virtual;\n"
    "         --secret access_key_id --secret secret_access_key\n"
    "  azure  --set account_url=URL container=C prefix=P; --secret account_key or sas_token\n"
    "  gcs    --set bucket=B prefix=P endpoint=URL project=ID; --secret service_account_json\n"
)


class LocationTarget(Target):
    resource, noun = "backup-locations", "backup location"


class PlatformLocationTarget(LocationTarget):
    """The platform's locations (platform staff only): found by name among them, no tenant."""

    resource, noun = "platform-backup-locations", "platform backup location"

    def __init__(self, session: Session) -> None:
        self.tenant = None
        self.client = session.client()

    @property
    def where(self) -> str:
        return "the platform"

    def find(self, name: str) -> dict:
        found = next((row for row in self.all() if row.get("name") == name), None)
        if found is None:
            raise not_found(f"{self.noun} {name}")
        return found

    def all(self) -> list[dict]:
        return self.client.list_all(api_path(self.resource), {})


PLATFORM = click.option("--platform", is_flag=True, help="A platform location (platform staff), not the tenant's.")


def _target(session: Session, tenant_slug: str | None, platform: bool) -> LocationTarget:
    if platform and tenant_slug:
        raise usage_error("--platform and --tenant name different locations: give one")
    return PlatformLocationTarget(session) if platform else LocationTarget(session, tenant_slug)


def _where(location: dict) -> str:
    config = location.get("config") or {}
    kind = location.get("kind", "")
    if kind == "local":
        return config.get("path", "-")
    container = config.get("bucket") or config.get("container") or "-"
    prefix = config.get("prefix")
    return f"{kind}://{container}/{prefix}" if prefix else f"{kind}://{container}"


@click.group(epilog=examples("hivemind backup location add nightly --kind local --set path=nightly"))
def backup() -> None:
    """Backups of the tenant: where they are stored (locations)."""


@backup.group(
    "location",
    epilog=examples(
        "hivemind backup location add nightly --kind local --set path=nightly",
        "hivemind backup location add offsite --kind s3 --set bucket=hm-backups "
        "--set endpoint_url=https://s3.example.com "
        "--secret access_key_id --secret secret_access_key",
        "hivemind backup location check offsite",
        "hivemind backup location ls",
        "hivemind backup location add shared --platform --kind s3 --set bucket=hm-shared "
        "--secret access_key_id --secret secret_access_key",
    ),
)
def location() -> None:
    """Backup locations: where the tenant's backup repositories live.

    Viewers may look (ls, info); operators and above add, change, check and remove them.
    Platform staff add platform locations (--platform): every tenant may then back up into one
    by name (its own location of that name comes first), each into a repository of its own.
    """


@location.command("ls", epilog=examples("hivemind backup location ls", "hivemind backup location ls -o json"))
@tenant_option
@PLATFORM
@output_option
@pass_session
def location_ls(session: Session, tenant_slug: str | None, platform: bool, output: str) -> None:
    """List the tenant's backup locations (--platform: the platform's): kind, where, credentials
    set, the last check."""
    target = _target(session, tenant_slug, platform)
    found = target.all()
    if output != "table":
        print_data(found, output)
        return
    rows = [
        (loc["name"], loc.get("kind", ""), _value_text(_where(loc)), ", ".join(loc.get("secrets_set") or []) or "-",
         loc.get("check_state", ""), age_text(loc.get("checked_at")) if loc.get("checked_at") else "-")
        for loc in found
    ]  # fmt: skip
    print_table(("NAME", "KIND", "WHERE", "CREDENTIALS SET", "CHECK", "CHECKED"), rows, styles={4: status_style},
                empty=f"No backup locations in {target.where}.")  # fmt: skip


@location.command(
    "add",
    epilog=KIND_HELP
    + examples(
        "hivemind backup location add nightly --kind local --set path=nightly",
        "hivemind backup location add blob --kind azure --set account_url=https://acct.blob.core.windows.net "
        "--set container=backups --secret account_key",
    ),
)
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(KINDS), help="What stores the backups.")
@SET
@SECRET
@click.option("--check/--no-check", default=True, show_default=True, help="Check it is reachable and writable.")
@tenant_option
@PLATFORM
@output_option
@pass_session
def location_add(session: Session, name: str, kind: str, config: dict, secrets: dict, check: bool,
                 tenant_slug: str | None, platform: bool, output: str) -> None:  # fmt: skip
    """Add a backup location NAME (a DNS label, unique in the tenant), then check it.

    The server checks every setting and names the bad ones (exit 1); a taken name exits 7. The
    check writes, reads back, lists and deletes a probe object; a location that fails it is
    kept (fix it with `update`) and the server's answer is shown (exit 1).
    """
    _check_name(name)
    target = _target(session, tenant_slug, platform)
    body = {"name": name, "kind": kind, "config": config, "secrets": secrets}
    if not platform:
        body["tenant"] = target.tenant
    with not_found_as(target.where):
        created = target.client.post(api_path(target.resource), body)
    if output == "table":
        click.echo(f"Added {kind} backup location {style(created.get('name', name), bold=True)} "
                   f"in {target.where}: {_where(created)}.")  # fmt: skip
    if check:
        answer = target.post(name, "check")
        created = {**created, "check_state": "ok", "check": answer}
        if output == "table":
            click.echo(f"Checked: {answer.get('detail', 'ok')}")
    if output != "table":
        print_data(created, output)


@location.command("info", epilog=examples("hivemind backup location info nightly"))
@click.argument("name")
@tenant_option
@PLATFORM
@output_option
@pass_session
def location_info(session: Session, name: str, tenant_slug: str | None, platform: bool, output: str) -> None:
    """Show one backup location: its settings (credentials only by name) and its last check
    (a platform location's: also the tenants with backups or policies in it)."""
    target = _target(session, tenant_slug, platform)
    found = target.get(name)
    if output != "table":
        print_data(found, output)
        return
    config = found.get("config") or {}
    print_fields(
        [
            ("Name", found.get("name", "")),
            ("Tenant", found.get("tenant", ""))
            if not platform
            else ("Tenants", ", ".join(found.get("tenants") or []) or "-"),
            ("Kind", found.get("kind", "")),
            *((f"  {key}", _value_text(value)) for key, value in sorted(config.items())),
            ("Credentials set", ", ".join(found.get("secrets_set") or []) or "-"),
            ("Check", found.get("check_state", "")),
            ("Checked", when(found.get("checked_at")) if found.get("checked_at") else "never"),
            *((("Check error", found["check_error"]),) if found.get("check_error") else ()),
            ("Created", when(found.get("created_at"))),
        ]
    )


@location.command(
    "update",
    epilog=KIND_HELP + examples("hivemind backup location update offsite --secret secret_access_key"),
)
@click.argument("name")
@click.option("--rename", metavar="NEW", help="A new name.")
@SET
@SECRET
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="Remove a setting (repeat).")
@click.option("--unset-secret", "unset_secrets", multiple=True, metavar="KEY", help="Remove a credential (repeat).")
@tenant_option
@PLATFORM
@output_option
@pass_session
def location_update(session: Session, name: str, rename: str | None, config: dict, secrets: dict,
                    unset: tuple[str, ...], unset_secrets: tuple[str, ...], tenant_slug: str | None, platform: bool,
                    output: str) -> None:  # fmt: skip
    """Change a location's settings or credentials: what is given is merged onto what is set
    and the whole is checked again (a bad setting is named, exit 1). Its kind never changes;
    check it again afterwards."""
    target = _target(session, tenant_slug, platform)
    changed = patch_settings(target, name, rename=rename, config=config, secrets=secrets, unset=unset,
                             unset_secrets=unset_secrets)  # fmt: skip
    if output != "table":
        print_data(changed, output)
        return
    click.echo(f"Updated backup location {style(changed.get('name', name), bold=True)} in {target.where}.")


@location.command("check", epilog=examples("hivemind backup location check offsite"))
@click.argument("name")
@tenant_option
@PLATFORM
@output_option
@pass_session
def location_check(session: Session, name: str, tenant_slug: str | None, platform: bool, output: str) -> None:
    """Prove location NAME reachable and writable now: a probe object is written, read back,
    listed and deleted. When it fails, the server's own answer is shown (exit 1)."""
    target = _target(session, tenant_slug, platform)
    answer = target.post(name, "check")
    if output != "table":
        print_data(answer, output)
        return
    click.echo(f"Backup location {style(name, bold=True)}: {answer.get('detail', 'ok')}")


@location.command("sync", epilog=examples("hivemind backup location sync offsite"))
@click.argument("name")
@click.option(
    "--platform",
    "platform",
    is_flag=True,
    help="A platform location: the tenant's (--tenant, or the context's) repository in it.",
)
@tenant_option
@output_option
@pass_session
def location_sync(session: Session, name: str, platform: bool, tenant_slug: str | None, output: str) -> None:
    """Record the backups location NAME holds that this install does not know yet.

    For disaster recovery: on a new install, import the tenant's repository keys (`hivemind
    backup keys import`), add the location, sync it; its backups then list, verify and
    restore as usual. Without the keys the repository cannot be read (exit 7). With --platform
    (platform staff), the tenant's repository in the platform location NAME is read."""
    if platform:
        target = PlatformLocationTarget(session)
        answer = target.post(name, "sync", {"tenant": session.tenant(tenant_slug)})
    else:
        target = LocationTarget(session, tenant_slug)
        answer = target.post(name, "sync")
    if output != "table":
        print_data(answer, output)
        return
    found = answer.get("backups") or []
    listing = f": {', '.join(str(pk) for pk in found)}" if found else ""
    click.echo(f"Backup location {style(name, bold=True)}: {answer.get('found', 0)} backups found{listing}.")


@location.command("rm", epilog=examples("hivemind backup location rm nightly --yes"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@tenant_option
@PLATFORM
@pass_session
def location_rm(session: Session, name: str, yes: bool, tenant_slug: str | None, platform: bool) -> None:
    """Remove a backup location and its sealed credentials. What it stores stays where it is.
    A platform location holding tenants' backups, or used by their policies, cannot go (exit 7).

    You are asked to type the name again unless --yes is given."""
    target = _target(session, tenant_slug, platform)
    target.delete(name, yes=yes)
    click.echo(f"Removed backup location {name} from {target.where}.")


# The other commands of the group, in modules of their own (they add themselves to `backup`).
from hivemind.cli import backup_policies, backup_restores, backup_runs  # noqa: E402, F401
