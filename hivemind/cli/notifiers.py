"""`hivemind notifier`: where a tenant's alerts are delivered (webhook, email, Slack-compatible
webhook, Prometheus Alertmanager), and `test-notifier`, which the `hivemind alert` group adds.

Notifiers are found by name in the tenant (the context's, or --tenant), like apps. Settings
are `--set KEY=VALUE`; secrets are `--secret KEY=VALUE`, or `--secret KEY` alone to type the
value at a hidden prompt (or read it from standard input), which keeps it out of the shell's
history and the process list. The server seals secrets and never shows them again: `info`
says which are set.
"""

from __future__ import annotations

import sys

import click

from hivemind.cli.apps import Target
from hivemind.cli.client import api_path
from hivemind.cli.errors import not_found_as, usage_error
from hivemind.cli.networks import _check_name
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

KINDS = ("webhook", "email", "slack", "alertmanager")
KIND_HELP = (
    "\b\nSettings (--set) and secrets (--secret) of each kind:\n"
    "  webhook       --set url=URL; --secret secret (the HMAC-SHA256 key, 16+ characters)\n"
    "  email         --set host=H port=N security=starttls|tls|none from=ADDR to=ADDR[,ADDR]\n"
    "                username=U ca_certificate=PEM; --secret password\n"
    "  slack         --set channel=C username=U icon_url=URL; --secret url (the incoming webhook)\n"
    "  alertmanager  --set url=http://am:9093 username=U; --secret password or bearer_token\n"
)


class NotifierTarget(Target):
    resource, noun = "notifiers", "notifier"


def _value(text: str):
    """A setting's value: whole numbers (a port) as numbers, true/false as booleans, else text."""
    if text.isdigit():
        return int(text)
    return {"true": True, "false": False}.get(text, text)


def _settings(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    found = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        found[key] = _value(value)
    return found


def _secrets(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    found = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise click.BadParameter(f"expected KEY or KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        if not sep:
            if sys.stdin.isatty():
                value = click.prompt(f"Secret {key}", hide_input=True)
            else:
                value = sys.stdin.readline().rstrip("\n")
        found[key] = value
    return found


def patch_settings(target: Target, name: str, *, rename: str | None, config: dict, secrets: dict,
                   unset: tuple[str, ...], unset_secrets: tuple[str, ...]) -> dict:  # fmt: skip
    """PATCH the object called `name` with what `--rename/--set/--secret/--unset/--unset-secret`
    say: settings and secrets merged onto what is set (a null unsets one). Exit 2 when nothing
    is asked; the server's answer otherwise."""
    body: dict = {}
    if rename:
        body["name"] = _check_name(rename, "--rename")
    if config or unset:
        body["config"] = {**config, **dict.fromkeys(unset)}
    if secrets or unset_secrets:
        body["secrets"] = {**secrets, **dict.fromkeys(unset_secrets)}
    if not body:
        raise usage_error("nothing to change: give --set, --secret, --unset, --unset-secret or --rename")
    found = target.find(name)
    with not_found_as(f"{target.noun} {name}", tenant=target.tenant):
        return target.client.request("PATCH", api_path(target.resource, found["id"]), json=body)


SET = click.option("--set", "config", multiple=True, metavar="KEY=VALUE", callback=_settings,
                   help="A setting (repeat for more).")  # fmt: skip
SECRET = click.option("--secret", "secrets", multiple=True, metavar="KEY[=VALUE]", callback=_secrets,
                      help="A secret (repeat); KEY alone asks for the value without echoing it.")  # fmt: skip


def _counts(notifier: dict) -> str:
    counts = notifier.get("deliveries") or {}
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"


def _value_text(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    text = str(value)
    return text if "\n" not in text else text.splitlines()[0] + " ..."


@click.group(
    epilog=examples(
        "hivemind notifier create ops-hook --kind webhook --set url=https://hooks.example.com/hm --secret secret",
        "hivemind notifier create oncall --kind email --set host=smtp.example.com --set from=hm@example.com "
        "--set to=oncall@example.com --set username=hm --secret password",
        "hivemind notifier test ops-hook",
        "hivemind notifier info ops-hook",
    )
)
def notifier() -> None:
    """Notifiers: where the tenant's alerts are delivered.

    A webhook (JSON, signed with HMAC-SHA256), email over SMTP (STARTTLS by default), a
    Slack-compatible incoming webhook, or a Prometheus Alertmanager (its API v2). Alert
    rules name the notifiers they notify. Deliveries are retried with backoff and recorded:
    `info` shows the latest with their errors. Viewers may look (ls, info); operators and
    above create, change, test and remove notifiers.
    """


@notifier.command("ls", epilog=examples("hivemind notifier ls", "hivemind notifier ls -o json"))
@tenant_option
@output_option
@pass_session
def notifier_ls(session: Session, tenant_slug: str | None, output: str) -> None:
    """List the tenant's notifiers: kind, where they deliver, secrets set, deliveries by state."""
    target = NotifierTarget(session, tenant_slug)
    found = target.all()
    if output != "table":
        print_data(found, output)
        return
    rows = [
        (
            n["name"],
            n.get("kind", ""),
            _value_text((n.get("config") or {}).get("url") or (n.get("config") or {}).get("host") or "-"),
            ", ".join(n.get("secrets_set") or []) or "-",
            _counts(n),
            age_text(n.get("created_at")),
        )
        for n in found
    ]
    print_table(
        ("NAME", "KIND", "TARGET", "SECRETS SET", "DELIVERIES", "AGE"),
        rows,
        empty=f"No notifiers in tenant {target.tenant}.",
    )


@notifier.command(
    "create",
    epilog=KIND_HELP
    + examples(
        "hivemind notifier create ops-hook --kind webhook --set url=https://hooks.example.com/hm --secret secret",
        "hivemind notifier create chat --kind slack --secret url",
        "hivemind notifier create am --kind alertmanager --set url=http://alertmanager:9093",
    ),
)
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(KINDS), help="What it delivers to.")
@SET
@SECRET
@tenant_option
@output_option
@pass_session
def notifier_create(session: Session, name: str, kind: str, config: dict, secrets: dict,
                    tenant_slug: str | None, output: str) -> None:  # fmt: skip
    """Create a notifier NAME (a DNS label, unique in the tenant).

    The server checks every setting and names the bad ones (exit 1); a taken name exits 7.
    Nothing is sent yet: `hivemind notifier test NAME` sends a test notification.
    """
    _check_name(name)
    target = NotifierTarget(session, tenant_slug)
    body = {"tenant": target.tenant, "name": name, "kind": kind, "config": config, "secrets": secrets}
    with not_found_as(f"tenant {target.tenant}"):
        created = target.client.post(api_path("notifiers"), body)
    if output != "table":
        print_data(created, output)
        return
    click.echo(f"Created {kind} notifier {style(created.get('name', name), bold=True)} in tenant {target.tenant}.")


def _show(found: dict, deliveries: list[dict]) -> None:
    config = found.get("config") or {}
    print_fields(
        [
            ("Name", found.get("name", "")),
            ("Tenant", found.get("tenant", "")),
            ("Kind", found.get("kind", "")),
            *((f"  {key}", _value_text(value)) for key, value in sorted(config.items())),
            ("Secrets set", ", ".join(found.get("secrets_set") or []) or "-"),
            ("Deliveries", _counts(found)),
            ("Created", when(found.get("created_at"))),
            ("Updated", when(found.get("updated_at"))),
        ]
    )
    click.echo()
    rows = [
        (
            str(d["id"]),
            d.get("status", ""),
            d.get("state", ""),
            f"{d.get('attempts', 0)}/{d.get('max_attempts', 0)}",
            age_text(d.get("created_at")),
            (d.get("last_error") or d.get("answer") or "-")[:100],
        )
        for d in deliveries
    ]
    print_table(("DELIVERY", "STATUS", "STATE", "ATTEMPTS", "AGE", "LAST ANSWER"), rows, styles={2: status_style},
                empty="No deliveries yet.")  # fmt: skip


@notifier.command("info", epilog=examples("hivemind notifier info ops-hook", "hivemind notifier info ops-hook -o yaml"))
@click.argument("name")
@click.option("--deliveries", "count", type=click.IntRange(0, 1000), default=10, show_default=True,
              help="How many of the latest deliveries to show.")  # fmt: skip
@tenant_option
@output_option
@pass_session
def notifier_info(session: Session, name: str, count: int, tenant_slug: str | None, output: str) -> None:
    """Show one notifier: its settings (secrets only by name), its latest deliveries and their errors."""
    target = NotifierTarget(session, tenant_slug)
    found = target.get(name)
    deliveries = []
    if count:
        with not_found_as(f"notifier {name}", tenant=target.tenant):
            page = target.client.get(api_path("notifiers", found["id"], "deliveries"), {"limit": count})
        deliveries = page.get("results", []) if isinstance(page, dict) else page
    if output != "table":
        print_data({**found, "latest_deliveries": deliveries}, output)
        return
    _show(found, deliveries)


@notifier.command(
    "update",
    epilog=KIND_HELP
    + examples(
        "hivemind notifier update oncall --set port=465 --set security=tls",
        "hivemind notifier update ops-hook --secret secret",
        "hivemind notifier update oncall --unset username --unset-secret password",
    ),
)
@click.argument("name")
@click.option("--rename", metavar="NEW", help="A new name.")
@SET
@SECRET
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="Remove a setting (repeat).")
@click.option("--unset-secret", "unset_secrets", multiple=True, metavar="KEY", help="Remove a secret (repeat).")
@tenant_option
@output_option
@pass_session
def notifier_update(session: Session, name: str, rename: str | None, config: dict, secrets: dict,
                    unset: tuple[str, ...], unset_secrets: tuple[str, ...], tenant_slug: str | None,
                    output: str) -> None:  # fmt: skip
    """Change a notifier's settings or secrets: what is given is merged onto what is set, and
    the whole is checked again (a bad setting is named, exit 1). Its kind never changes."""
    target = NotifierTarget(session, tenant_slug)
    changed = patch_settings(target, name, rename=rename, config=config, secrets=secrets, unset=unset,
                             unset_secrets=unset_secrets)  # fmt: skip
    if output != "table":
        print_data(changed, output)
        return
    click.echo(f"Updated notifier {style(changed.get('name', name), bold=True)} in tenant {target.tenant}.")


@notifier.command("rm", epilog=examples("hivemind notifier rm ops-hook", "hivemind notifier rm ops-hook --yes"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@tenant_option
@pass_session
def notifier_rm(session: Session, name: str, yes: bool, tenant_slug: str | None) -> None:
    """Delete a notifier, its deliveries and its sealed secrets; alert rules stop naming it.

    You are asked to type the name again unless --yes is given."""
    target = NotifierTarget(session, tenant_slug)
    target.delete(name, yes=yes)
    click.echo(f"Deleted notifier {name} from tenant {target.tenant}.")


def _send_test(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    target = NotifierTarget(session, tenant_slug)
    answer = target.post(name, "test")
    if output != "table":
        print_data(answer, output)
        return
    click.echo(f"Notifier {style(name, bold=True)} took the test notification: {answer.get('answer', '')}")


TEST_HELP = """Send a test notification through notifier NAME now, and show what its peer answered.

The server sends it at once (within HIVEMIND_NOTIFIER_TIMEOUT, default 10 s). A setting that
does not connect or log in (an SMTP host, a refused password) is named with the server's
answer, and a peer that answers with an error shows that answer: both exit 1.
"""


@notifier.command("test", help=TEST_HELP, epilog=examples("hivemind notifier test ops-hook"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def notifier_test(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    _send_test(session, name, tenant_slug, output)


@click.command("test-notifier", help=TEST_HELP, epilog=examples("hivemind alert test-notifier ops-hook"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def test_notifier(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    _send_test(session, name, tenant_slug, output)
