"""`hivemind app`: deploy containerised apps and change, inspect and delete them.

Apps are named within a tenant (the context's, or --tenant). Every change is a workflow
on the server: the command waits for it with the same progress display as
`hivemind workflow watch` and exits non-zero naming the failed step, unless --no-wait.
"""

from __future__ import annotations

import copy
import re
import sys
import time
from collections.abc import Callable

import click
from django.core.exceptions import ValidationError

from hivemind.cli.client import ApiClient, api_path
from hivemind.cli.errors import not_found, not_found_as, usage_error
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
from hivemind.cli.tenants import tenant_option
from hivemind.cli.workflows import EXIT_INTERRUPTED, age_text, short, watch_workflow
from hivemind.core import limits
from hivemind.core.names import is_dns_label
from hivemind.core.units import QuantityError, parse_bytes, parse_cpu, parse_duration

APPS = api_path("apps")
RESTART_POLICIES = ("always", "on-failure", "unless-stopped", "no")
MAX_TAIL = 10_000
FOLLOW_INTERVAL = 1.0
CHANGE_WIDTH = 200  # what the server keeps of a revision's change note


class Target:
    """The tenant a command works in and a client that sends it as X-Hivemind-Tenant.

    Objects are found by name in the tenant: apps here; a subclass names another resource
    (`resource`, its API path's name, and `noun`, what an error calls it).
    """

    resource, noun = "apps", "app"

    def __init__(self, session: Session, tenant_slug: str | None) -> None:
        self.tenant = session.tenant(tenant_slug)
        self.client: ApiClient = session.client(tenant=self.tenant)

    @property
    def where(self) -> str:
        return f"tenant {self.tenant}"

    def find(self, name: str) -> dict:
        """The object called `name` in the tenant (its list row), or exit 6."""
        with not_found_as(f"tenant {self.tenant}"):
            page = self.client.get(api_path(self.resource), {"name": name, "tenant": self.tenant})
        rows = page.get("results", []) if isinstance(page, dict) else page
        found = next((row for row in rows if row.get("name") == name), None)
        if found is None:
            raise not_found(f"{self.noun} {name}", self.tenant)
        return found

    def get(self, name: str, action: str = "", params: dict | None = None):
        found = self.find(name)
        with not_found_as(f"{self.noun} {name}", tenant=self.tenant):
            return self.client.get(api_path(self.resource, found["id"], action), params)

    def post(self, name: str, action: str, body: dict | None = None):
        found = self.find(name)
        with not_found_as(f"{self.noun} {name}", tenant=self.tenant):
            return self.client.post(api_path(self.resource, found["id"], action), body or {})

    def all(self) -> list[dict]:
        """Every object of the tenant (all pages)."""
        with not_found_as(f"tenant {self.tenant}"):
            return self.client.list_all(api_path(self.resource), {"tenant": self.tenant})

    def delete(self, name: str, *, yes: bool):
        """Delete the object called `name`, after the user typed its name again unless `yes`;
        returns the server's answer (a started workflow, or nothing)."""
        found = self.find(name)
        if not yes:
            question = f"Type the name ({name}) to delete {self.noun} {name} in {self.where}"
            confirm_typed(name, question, noun="name", refused="deleted")
        with not_found_as(f"{self.noun} {name}", tenant=self.tenant):
            return self.client.delete(api_path(self.resource, found["id"]))


# Spec flags, shared by deploy and update ------------------------------------------------------

SPEC_OPTIONS = [
    click.option("--command", "command_line", metavar="CMD", help="Command line to run [default: the image's]."),
    click.option(
        "--env",
        "env",
        multiple=True,
        metavar="KEY=VALUE",
        help="Environment variable (repeat; in update, KEY- removes one).",
    ),
    click.option(
        "--port",
        "ports",
        multiple=True,
        metavar="[HOST:]CONTAINER[/PROTO]",
        help="Port the app listens on, published on HOST when given, e.g. 80:8080/tcp (repeat).",
    ),
    click.option("--cpu", metavar="CPU", help="CPU reserved per replica, e.g. 250m or 0.5 [default: 100m]."),
    click.option("--memory", metavar="SIZE", help="Memory reserved per replica, e.g. 128Mi [default: 64Mi]."),
    click.option("--cpu-limit", metavar="CPU", help="CPU a replica may use at most, e.g. 1 or 500m."),
    click.option("--memory-limit", metavar="SIZE", help="Memory a replica may use at most, e.g. 256Mi."),
    click.option("--health-cmd", metavar="CMD", help="Health check: a command that exits 0 when healthy."),
    click.option(
        "--health-http", metavar="PORT[:PATH]", help="Health check: HTTP GET answers 2xx, e.g. 8080:/healthz."
    ),
    click.option("--health-tcp", metavar="PORT", help="Health check: the port accepts connections."),
    click.option("--health-interval", metavar="SECONDS", help="Seconds between health checks [default: 10]."),
    click.option("--restart", type=click.Choice(RESTART_POLICIES), help="Restart policy [default: always]."),
    click.option(
        "--node-selector",
        "node_selector",
        multiple=True,
        metavar="KEY=VALUE",
        help="Run only on nodes with this label (repeat; in update, KEY- removes one).",
    ),
    click.option(
        "--label",
        "labels",
        multiple=True,
        metavar="KEY=VALUE",
        help="A label of the app, for network policies to select it by (repeat; in update, KEY- removes one).",
    ),
    click.option(
        "--network",
        "networks",
        multiple=True,
        metavar="NAME",
        help="A network of the tenant the replicas join (repeat; in update, replaces the list) [default: default].",
    ),
    click.option(
        "--volume",
        "volumes",
        multiple=True,
        metavar="NAME:PATH[:ro]",
        help="Mount the tenant's volume NAME at PATH, read-only with :ro (repeat; in update, replaces the list).",
    ),
]


def spec_options(func: Callable) -> Callable:
    for option in reversed(SPEC_OPTIONS):
        func = option(func)
    return func


# The flags whose values are quantities: parsed here by the server's own parsers (core/units.py),
# so a malformed one exits 2 naming the flag with the message the API would give.
QUANTITY_FLAGS = {
    "cpu": ("--cpu", parse_cpu),
    "memory": ("--memory", parse_bytes),
    "cpu_limit": ("--cpu-limit", parse_cpu),
    "memory_limit": ("--memory-limit", parse_bytes),
    "health_interval": ("--health-interval", lambda value: parse_duration(value, low=0.5, high=3600)),
}


def check_flags(flags: dict) -> None:
    """Quantities and env values as the server checks them; a bad one is a usage error (exit 2)."""
    for key, (flag, parse) in QUANTITY_FLAGS.items():
        if flags.get(key) is not None:
            try:
                parse(flags[key])
            except QuantityError as exc:
                raise usage_error(f"{flag}: {exc}") from None
    for item in flags.get("env") or ():
        key, _, value = item.partition("=")
        try:  # the name's grammar is the server's; a control character must not come back to the terminal
            limits.check_text(f"--env {key[:40]!r}", key, limits.MAX_ENV_NAME)
            limits.check_text(f"--env {key}", value, limits.MAX_ENV_VALUE, multiline=True)
        except ValidationError as exc:
            ((field, messages),) = exc.message_dict.items()
            raise usage_error(f"{field}: {messages[0]}") from None


def _pairs(items: tuple[str, ...], flag: str, *, removals: bool) -> tuple[dict[str, str], list[str]]:
    """`KEY=VALUE` to set, `KEY-` to remove (update only)."""
    values: dict[str, str] = {}
    removed: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key:
            values[key] = value
        elif removals and not sep and item.endswith("-") and len(item) > 1:
            removed.append(item[:-1])
        else:
            expected = "KEY=VALUE, or KEY- to remove" if removals else "KEY=VALUE"
            raise usage_error(f"{flag}: expected {expected}, got {item!r}")
    return values, removed


def _mount(item: str) -> dict:
    """`--volume NAME:PATH[:ro]` as the spec's mount, checked by the server's rules (exit 2)."""
    from django.core.exceptions import ValidationError

    from storage.mounts import clean_mount_path

    name, sep, rest = item.partition(":")
    path, _, mode = rest.partition(":")
    if not sep or not is_dns_label(name) or mode not in ("", "ro", "rw"):
        raise usage_error(f"--volume: expected NAME:PATH or NAME:PATH:ro with NAME a volume's name, got {item!r}")
    try:
        path = clean_mount_path("--volume", path)
    except ValidationError as exc:
        raise usage_error(f"--volume {item}: {exc.message_dict['--volume'][0]}") from None
    return {"volume": name, "path": path, "read_only": mode == "ro"}


def _health(flags: dict, current: dict | None) -> dict | None:
    """The health check the flags ask for; None when they leave it alone."""
    kinds = [name for name in ("health_cmd", "health_http", "health_tcp") if flags.get(name) is not None]
    if len(kinds) > 1:
        raise usage_error("give one of --health-cmd, --health-http and --health-tcp")
    interval = flags.get("health_interval")
    if not kinds:
        if interval is None:
            return None
        if not current:
            raise usage_error("--health-interval needs a health check: --health-cmd, --health-http or --health-tcp")
        return {**current, "interval": interval}
    if kinds[0] == "health_cmd":
        check = {"type": "cmd", "command": flags["health_cmd"]}
    elif kinds[0] == "health_tcp":
        check = {"type": "tcp", "port": flags["health_tcp"]}
    else:
        port, _, path = flags["health_http"].partition(":")
        check = {"type": "http", "port": port, "path": path or "/"}
    if interval is not None:
        check["interval"] = interval
    return check


def editable(spec: dict) -> dict:
    """A stored (normal form) spec as the API takes it back: CPU as millicores text ("100m"),
    since a bare number there means whole cores."""
    spec = copy.deepcopy(spec)
    resources = spec.get("resources") or {}
    for key in ("cpu", "cpu_limit"):
        if isinstance(resources.get(key), int):
            resources[key] = f"{resources[key]}m"
    return spec


def apply_flags(spec: dict, flags: dict, *, removals: bool) -> list[str]:
    """Write the spec flags given into `spec`; the names of what changed."""
    check_flags(flags)
    changed: list[str] = []
    if flags.get("image"):
        spec["image"] = flags["image"]
        changed.append(f"image={flags['image']}")
    if flags.get("command_line") is not None:
        spec["command"], spec["args"] = flags["command_line"], []
        changed.append("command")
    env, unset = _pairs(flags.get("env") or (), "--env", removals=removals)
    if env or unset:
        merged = {key: value for key, value in (spec.get("env") or {}).items() if key not in unset}
        spec["env"] = {**merged, **env}
        changed.append("env")
    if flags.get("ports"):
        spec["ports"] = list(flags["ports"])
        changed.append("ports")
    for key in ("cpu", "memory", "cpu_limit", "memory_limit"):
        if flags.get(key) is not None:
            spec.setdefault("resources", {})[key] = flags[key]
            changed.append(f"{key}={flags[key]}")
    health = _health(flags, spec.get("health"))
    if health is not None:
        spec["health"] = health
        changed.append("health")
    if flags.get("restart"):
        spec["restart"] = flags["restart"]
        changed.append(f"restart={flags['restart']}")
    labels, unlabel = _pairs(flags.get("node_selector") or (), "--node-selector", removals=removals)
    if labels or unlabel:
        placement = spec.setdefault("placement", {})
        selector = {k: v for k, v in (placement.get("node_selector") or {}).items() if k not in unlabel}
        placement["node_selector"] = {**selector, **labels}
        changed.append("node selector")
    labels, unlabel = _pairs(flags.get("labels") or (), "--label", removals=removals)
    if labels or unlabel:
        kept = {k: v for k, v in (spec.get("labels") or {}).items() if k not in unlabel}
        spec["labels"] = {**kept, **labels}
        changed.append("labels")
    if flags.get("networks"):
        for name in flags["networks"]:
            if not is_dns_label(name):
                raise usage_error(f"--network: expected a network name (a DNS label), got {name[:70]!r}")
        spec["networks"] = list(dict.fromkeys(flags["networks"]))
        changed.append("networks")
    if flags.get("volumes"):
        spec["volumes"] = [_mount(item) for item in flags["volumes"]]
        changed.append("volumes")
    return changed


# Waiting ----------------------------------------------------------------------------------------

wait_option = click.option(
    "--no-wait", "no_wait", is_flag=True, help="Return once the server accepted the change; do not wait for it."
)


def finish(
    target: Target,
    started: dict,
    *,
    what: str,
    no_wait: bool,
    output: str,
    done: Callable[[], None] | None = None,
) -> None:
    """Watch the workflow a change started (or just name it with --no-wait); exits."""
    workflow_id = started["workflow"]
    if no_wait:
        if output != "table":
            print_data(started, output)
        else:
            click.echo(f"{what}: workflow {workflow_id}; `hivemind workflow watch {workflow_id}` follows it.")
        sys.exit(0)
    if output == "table":
        click.echo(f"{what}: workflow {workflow_id}")
    code = watch_workflow(target.client, workflow_id, output=output)
    if code == 0 and output == "table" and done is not None:
        done()
    sys.exit(code)


def _summary(target: Target, name: str) -> Callable[[], None]:
    def show() -> None:
        app = target.find(name)
        click.echo(
            f"App {name} is {status_style(app.get('status', ''))}: {app.get('running', 0)}/{app.get('replicas', 0)} "
            f"replicas running at revision {app.get('revision')}."
        )

    return show


# Commands ---------------------------------------------------------------------------------------


@click.group(
    epilog=examples(
        "hivemind app deploy --name web --image nginx:1.27 --port 80:80 --replicas 2",
        "hivemind app ls",
        "hivemind app logs web --follow",
    )
)
def app() -> None:
    """Apps: containers run as replicas on the cluster's nodes.

    Viewers may look (ls, info, revisions, logs, stats); operators and above deploy and
    change apps. Every change runs as a workflow; commands wait for it and show its
    progress unless --no-wait.
    """


@app.command(
    "deploy",
    epilog=examples(
        "hivemind app deploy --name web --image nginx:1.27 --port 80:80 --replicas 2 --memory 128Mi",
        "hivemind app deploy --name api --image ghcr.io/acme/api:2.1 --env MODE=prod --health-http 8080:/healthz",
        "hivemind app deploy --name edge --image nginx:1.27 --node-selector zone=eu-1 --cpu-limit 1 --no-wait",
        "hivemind app deploy --name job --image busybox --command 'sh -c \"echo hi; sleep 3600\"'",
    ),
)
@click.option("--name", required=True, help="The app's name: a DNS label, unique in the tenant.")
@click.option("--image", required=True, help="Image reference, e.g. nginx:1.27.")
@click.option("--service", metavar="NAME", default="", help="DNS name of the app's service [default: the name].")
@click.option(
    "--replicas", type=click.IntRange(0, 1000), default=1, show_default=True, help="How many replicas to run."
)
@spec_options
@wait_option
@tenant_option
@output_option
@pass_session
def app_deploy(
    session: Session,
    name: str,
    service: str,
    replicas: int,
    no_wait: bool,
    tenant_slug: str | None,
    output: str,
    **flags,
) -> None:
    """Deploy a new app and wait until its replicas run (healthy, when it has a health check).

    A malformed quantity or env value exits 2 naming the flag, before anything is sent. The
    server checks the spec and the tenant's quota: a bad value exits 1 naming the field, an
    exceeded quota or a taken name exits 7. A deploy that cannot be placed or whose
    containers fail exits 1 naming the failed step; what it made is undone.
    """
    spec: dict = {}
    apply_flags(spec, flags, removals=False)
    target = Target(session, tenant_slug)
    body = {"tenant": target.tenant, "name": name, "spec": spec, "replicas": replicas, "service_name": service}
    created = target.client.post(APPS, body)
    started = {"workflow": created["workflow"], "url": api_path("workflows", created["workflow"]), "app": created}
    what = f"Deploying {name} ({replicas} replica{'s' if replicas != 1 else ''}) in tenant {target.tenant}"
    finish(target, started, what=what, no_wait=no_wait, output=output, done=_summary(target, name))


@app.command("ls", epilog=examples("hivemind app ls", "hivemind app ls --tenant acme -o json"))
@tenant_option
@output_option
@pass_session
def app_ls(session: Session, tenant_slug: str | None, output: str) -> None:
    """List the tenant's apps: status, replicas running of wanted, revision and image."""
    target = Target(session, tenant_slug)
    apps = target.all()
    if output != "table":
        print_data(apps, output)
        return
    rows = [
        (
            a["name"],
            a.get("status", ""),
            f"{a.get('running', 0)}/{a.get('replicas', 0)}",
            str(a.get("revision") or "-"),
            a.get("image") or "-",
            age_text(a.get("created_at")),
            short(a.get("message")),
        )
        for a in apps
    ]
    print_table(
        ("NAME", "STATUS", "RUNNING", "REVISION", "IMAGE", "AGE", "MESSAGE"),
        rows,
        styles={1: status_style},
        empty=f"No apps in tenant {target.tenant}.",
    )


def _cpu(millis: int | str | None) -> str:
    """The stored spec says 100 (millicores); the API's editable spec says "100m"."""
    if millis is None:
        return "-"
    return millis if isinstance(millis, str) else f"{millis}m"


def _resources(resources: dict) -> str:
    text = f"cpu {_cpu(resources.get('cpu'))}, memory {human_bytes(resources.get('memory') or 0)}"
    limits = []
    if resources.get("cpu_limit") is not None:
        limits.append(f"cpu {_cpu(resources['cpu_limit'])}")
    if resources.get("memory_limit") is not None:
        limits.append(f"memory {human_bytes(resources['memory_limit'])}")
    return text + (f" (limits: {', '.join(limits)})" if limits else "")


def _health_text(health: dict | None) -> str:
    if not health:
        return "-"
    if health.get("type") == "http":
        what = f"http GET :{health.get('port')}{health.get('path', '/')}"
    elif health.get("type") == "tcp":
        what = f"tcp :{health.get('port')}"
    else:
        what = "cmd " + " ".join(health.get("command") or [])
    return f"{what} every {health.get('interval')}s, {health.get('retries')} retries"


def _vips(service: dict) -> str:
    """The app's virtual addresses (apps with ports get them), or why there are none."""
    found = [address for address in (service.get("vip4"), service.get("vip6")) if address]
    return ", ".join(found) if found else "- (the app has no ports)"


def _ports_text(ports: list[dict] | None) -> str:
    texts = []
    for port in ports or []:
        published = f"{port['host_port']}:" if port.get("host_port") else ""
        texts.append(f"{published}{port.get('container_port')}/{port.get('protocol', 'tcp')}")
    return ", ".join(texts) or "-"


def _addresses_text(addresses: list[dict] | None) -> str:
    """`default=10.128.0.5,fd12:3456:789a::5 backend=10.128.1.9`: a replica's addresses per network."""
    texts = [
        f"{a.get('network')}=" + ",".join(ip for ip in (a.get("ipv4"), a.get("ipv6")) if ip) for a in addresses or []
    ]
    return " ".join(texts) or "-"


@app.command("info", epilog=examples("hivemind app info web", "hivemind app info web -o yaml"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def app_info(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    """Show one app: its current spec, where each replica runs and its addresses on each network.

    json/yaml print the API's app with its replicas (from /api/v1/containers/) under `containers`.
    """
    target = Target(session, tenant_slug)
    found = target.get(name)
    containers = target.client.list_all(api_path("containers"), {"app": name, "tenant": target.tenant})
    if output != "table":
        print_data({**found, "containers": containers}, output)
        return
    spec = found.get("current_spec") or {}
    service = found.get("service") or {}
    command = " ".join([*(spec.get("command") or []), *(spec.get("args") or [])])
    print_fields(
        [
            ("Name", found["name"]),
            ("Tenant", found.get("tenant", "")),
            ("Status", status_style(found.get("status", ""))),
            ("Replicas", f"{found.get('running', 0)} running of {found.get('replicas', 0)}"),
            ("Revision", str(found.get("revision") or "-")),
            ("Image", spec.get("image") or "-"),
            ("Command", command or "(the image's)"),
            ("Env", ", ".join(sorted(spec.get("env") or {})) or "-"),
            ("Ports", _ports_text(spec.get("ports"))),
            ("Resources", _resources(spec.get("resources") or {})),
            ("Health", _health_text(spec.get("health"))),
            ("Restart", spec.get("restart") or "-"),
            ("Labels", labels_text(spec.get("labels"))),
            ("Node selector", labels_text((spec.get("placement") or {}).get("node_selector"))),
            ("Service", found.get("service_name") or found["name"]),
            ("Networks", ", ".join(service.get("networks") or []) or "-"),
            (
                "Volumes",
                ", ".join(
                    f"{m['volume']} at {m['path']}{' (read-only)' if m.get('read_only') else ''}"
                    for m in spec.get("volumes") or []
                )
                or "-",
            ),
            ("Virtual addresses", _vips(service)),
            ("DNS names", ", ".join(service.get("names") or []) or "-"),
            ("Message", found.get("message") or "-"),
            ("Created", when(found.get("created_at"))),
            ("Updated", when(found.get("updated_at"))),
        ]
    )
    click.echo()
    rows = [
        (
            str(c.get("replica")),
            c.get("node") or "-",
            c.get("state", ""),
            c.get("health", ""),
            str(c.get("revision", "")),
            str(c.get("restarts", 0)),
            age_text(c.get("started_at")),
            c.get("name", ""),
            _addresses_text(c.get("addresses")),
        )
        for c in containers
    ]
    print_table(
        ("REPLICA", "NODE", "STATE", "HEALTH", "REVISION", "RESTARTS", "UP", "CONTAINER", "ADDRESSES"),
        rows,
        styles={2: status_style, 3: status_style},
        empty="No replicas.",
    )


@app.command("revisions", epilog=examples("hivemind app revisions web", "hivemind app rollback web --revision 2"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def app_revisions(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    """List an app's revisions, newest first (what `app rollback --revision` takes)."""
    target = Target(session, tenant_slug)
    current = target.find(name).get("revision")
    revisions = target.get(name, "revisions")
    if output != "table":
        print_data(revisions, output)
        return
    rows = [
        (
            str(r["number"]) + (" *" if r["number"] == current else ""),
            (r.get("spec") or {}).get("image", "-"),
            r.get("change") or "-",
            r.get("created_by") or "-",
            when(r.get("created_at")),
        )
        for r in revisions
    ]
    print_table(("REVISION", "IMAGE", "CHANGE", "BY", "CREATED"), rows, empty="No revisions.")


@app.command("scale", epilog=examples("hivemind app scale web 3", "hivemind app scale web 0 --no-wait"))
@click.argument("name")
@click.argument("replicas", type=click.IntRange(0, 1000))
@wait_option
@tenant_option
@output_option
@pass_session
def app_scale(session: Session, name: str, replicas: int, no_wait: bool, tenant_slug: str | None, output: str) -> None:
    """Run REPLICAS replicas of an app (0 stops them all and keeps the app)."""
    target = Target(session, tenant_slug)
    started = target.post(name, "scale", {"replicas": replicas})
    finish(
        target,
        started,
        what=f"Scaling {name} to {replicas}",
        no_wait=no_wait,
        output=output,
        done=_summary(target, name),
    )


@app.command("restart", epilog=examples("hivemind app restart web"))
@click.argument("name")
@wait_option
@tenant_option
@output_option
@pass_session
def app_restart(session: Session, name: str, no_wait: bool, tenant_slug: str | None, output: str) -> None:
    """Replace every replica with a new container, a batch at a time (like an update)."""
    target = Target(session, tenant_slug)
    started = target.post(name, "restart")
    finish(target, started, what=f"Restarting {name}", no_wait=no_wait, output=output, done=_summary(target, name))


@app.command("rollback", epilog=examples("hivemind app rollback web", "hivemind app rollback web --revision 2"))
@click.argument("name")
@click.option(
    "--revision",
    type=click.IntRange(min=1),
    metavar="N",
    help="Roll back to this revision [default: the one before the current].",
)
@wait_option
@tenant_option
@output_option
@pass_session
def app_rollback(
    session: Session, name: str, revision: int | None, no_wait: bool, tenant_slug: str | None, output: str
) -> None:
    """Roll an app back to an earlier revision's spec (`hivemind app revisions` lists them)."""
    target = Target(session, tenant_slug)
    started = target.post(name, "rollback", {"revision": revision} if revision else {})
    to = f"revision {revision}" if revision else "the previous revision"
    finish(
        target,
        started,
        what=f"Rolling {name} back to {to}",
        no_wait=no_wait,
        output=output,
        done=_summary(target, name),
    )


@app.command(
    "update",
    epilog=examples(
        "hivemind app update web --image nginx:1.28",
        "hivemind app update web --env MODE=debug --env OLD- --memory 256Mi",
        "hivemind app update web --node-selector zone- --change 'run anywhere'",
    ),
)
@click.argument("name")
@click.option("--image", help="New image reference.")
@spec_options
@click.option("--change", metavar="TEXT", help="What this revision changes [default: the flags given].")
@wait_option
@tenant_option
@output_option
@pass_session
def app_update(
    session: Session,
    name: str,
    change: str | None,
    no_wait: bool,
    tenant_slug: str | None,
    output: str,
    **flags,
) -> None:
    """Roll out a new revision: the flags given are merged into the current spec.

    --env and --node-selector add to what is there (KEY- removes one); --port replaces
    the ports; a --health-* check replaces the health check. Replicas are replaced a
    batch at a time, never dropping below replicas - max_unavailable.
    """
    check_flags(flags)  # before anything is fetched: a malformed value exits 2
    target = Target(session, tenant_slug)
    found = target.get(name)
    spec = editable(found.get("current_spec") or {})
    changed = apply_flags(spec, flags, removals=True)
    if not changed:
        raise usage_error("nothing to change: give --image or another spec flag (see --help)")
    note = change if change is not None else ", ".join(changed)
    body = {"spec": spec, "change": note[:CHANGE_WIDTH]}
    with not_found_as(f"app {name}", tenant=target.tenant):
        started = target.client.request("PATCH", api_path("apps", found["id"]), json=body)
    finish(target, started, what=f"Updating {name}", no_wait=no_wait, output=output, done=_summary(target, name))


@app.command("delete", epilog=examples("hivemind app delete web", "hivemind app delete web --yes --no-wait"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@wait_option
@tenant_option
@output_option
@pass_session
def app_delete(session: Session, name: str, yes: bool, no_wait: bool, tenant_slug: str | None, output: str) -> None:
    """Delete an app: its replicas stop, then it is gone and its quota released.

    You are asked to type the name again unless --yes is given.
    """
    target = Target(session, tenant_slug)
    started = target.delete(name, yes=yes)
    finish(
        target,
        started,
        what=f"Deleting {name} from tenant {target.tenant}",
        no_wait=no_wait,
        output=output,
        done=lambda: click.echo(f"Deleted app {name}."),
    )


def _warn(entries: list[dict], shown: set[str] | None = None) -> None:
    """One stderr line per replica that has no answer; in --follow, once per reason."""
    for entry in entries:
        if entry.get("error"):
            line = f"warning: replica {entry.get('replica')} ({entry.get('name')}): {entry['error']}"
            if shown is None or line not in shown:
                click.echo(line, err=True)
                if shown is not None:
                    shown.add(line)


def _bytes_pair(entry: dict, first: str, second: str) -> str:
    return f"{human_bytes(entry.get(first) or 0)} / {human_bytes(entry.get(second) or 0)}"


def _stamp(line: str) -> str:
    """The Docker time of an API log line, `[web-0] <time> <text>`."""
    parts = line.split(" ", 2)
    return parts[1] if len(parts) > 1 else ""


@app.command(
    "logs",
    epilog=examples(
        "hivemind app logs web",
        "hivemind app logs web --tail 20 --replica 1",
        "hivemind app logs web --since 10m",
        "hivemind app logs web --since 2026-01-31T12:00:00Z --follow",
        "hivemind app logs web --grep error --since 1h",
        "hivemind app logs web --grep 'timed? ?out|refused' -i --tail 20",
    ),
)
@click.argument("name")
@click.option(
    "--tail",
    type=click.IntRange(1, MAX_TAIL),
    default=100,
    show_default=True,
    metavar="N",
    help="Lines per replica, from the end.",
)
@click.option("--since", metavar="WHEN", help="Only lines since: seconds ago (300, 90s, 5m, 2h) or an ISO 8601 time.")
@click.option("--replica", type=click.IntRange(min=0), metavar="N", help="Only this replica (0-based).")
@click.option(
    "--grep",
    metavar="PATTERN",
    help="Only lines matching this regular expression (Python's; a plain word is one), searched in each "
    "replica's last 20000 lines; --tail then counts matching lines.",
)
@click.option("--ignore-case", "-i", is_flag=True, help="--grep ignores upper and lower case.")
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new lines; polls the server every second. Ctrl-C stops."
)
@tenant_option
@output_option
@pass_session
def app_logs(
    session: Session,
    name: str,
    tail: int,
    since: str | None,
    replica: int | None,
    grep: str | None,
    ignore_case: bool,
    follow: bool,
    tenant_slug: str | None,
    output: str,
) -> None:
    """Print the logs of an app's replicas, merged in time order.

    Each line reads `[<app>-<replica>] <time> <text>`. The nodes' agents read them from
    Docker; a replica whose node does not answer gets a warning on stderr. --grep keeps the
    lines that match, on every replica and node (each agent filters its own). --follow asks
    again every second for the lines since the newest one printed (it polls: nothing is
    streamed).
    """
    if follow and output != "table":
        raise usage_error("--follow prints lines as they come; it takes no -o")
    if ignore_case and not grep:
        raise usage_error("--ignore-case goes with --grep PATTERN")
    if grep:
        try:
            re.compile(grep)  # the server checks it too; a typo is caught before anything is asked
        except re.error as exc:
            raise usage_error(f"--grep: not a valid regular expression: {exc}") from None
    target = Target(session, tenant_slug)
    app_id = target.find(name)["id"]
    params: dict = {"tail": tail, "since": since, "replica": replica}
    if grep is not None:
        params["grep"] = f"(?i){grep}" if ignore_case else grep
    with not_found_as(f"app {name}", tenant=target.tenant):
        answer = target.client.get(api_path("apps", app_id, "logs"), params)
    if output != "table":
        print_data(answer, output)
        return
    for line in answer.get("lines", []):
        click.echo(line)
    warned: set[str] = set()
    _warn(answer.get("containers", []), warned if follow else None)
    if not follow:
        return
    seen = set(answer.get("lines", []))
    cursor = max((_stamp(line) for line in seen), default=None)
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL)
            # The same question until a line came; then everything since the newest one.
            query = {**params, "tail": MAX_TAIL, "since": cursor} if cursor else params
            with not_found_as(f"app {name}", tenant=target.tenant):
                answer = target.client.get(api_path("apps", app_id, "logs"), query)
            lines = answer.get("lines", [])
            for line in lines:
                if line not in seen:
                    click.echo(line)
            _warn(answer.get("containers", []), warned)
            if lines:
                # Docker's `since` includes its own second fraction: the next answer repeats
                # the lines at the cursor, and `seen` keeps them from printing twice.
                seen = set(lines) if cursor else seen | set(lines)
                cursor = max([_stamp(line) for line in lines] + ([cursor] if cursor else []))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


@app.command("stats", epilog=examples("hivemind app stats web", "hivemind app stats web -o json"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def app_stats(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    """Show each replica's CPU, memory and network use, as its node's Docker reports them.

    CPU 100% is one core busy. Memory is without reclaimable page cache; the limit is the
    node's memory when the app sets none. Takes a second or two: Docker samples twice.
    """
    target = Target(session, tenant_slug)
    answer = target.get(name, "stats")
    if output != "table":
        print_data(answer, output)
        return
    rows = []
    for entry in answer.get("containers", []):
        if entry.get("error"):
            rows.append((str(entry["replica"]), entry.get("node") or "-", entry.get("state", ""), "-", "-", "-", "-"))
            continue
        percent = entry.get("memory_percent")
        memory = _bytes_pair(entry, "memory_usage_bytes", "memory_limit_bytes")
        rows.append(
            (
                str(entry["replica"]),
                entry.get("node") or "-",
                entry.get("state", ""),
                f"{entry.get('cpu_percent') or 0:.2f}%",
                memory + (f" ({percent:.1f}%)" if percent is not None else ""),
                _bytes_pair(entry, "network_rx_bytes", "network_tx_bytes"),
                str(entry["pids"]) if entry.get("pids") is not None else "-",
            )
        )
    print_table(
        ("REPLICA", "NODE", "STATE", "CPU", "MEMORY", "NET RX / TX", "PIDS"),
        rows,
        styles={2: status_style},
        empty="No replicas.",
    )
    _warn(answer.get("containers", []))
