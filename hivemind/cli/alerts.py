"""`hivemind alert`: a tenant's alerts, the rules that raise them, silences and history.

Rules are applied from YAML or JSON files the way `hivemind policy apply -f` applies policies:
each document is `name:` plus the rule's fields (alerting/api/serializers.py), created, or
changed in place when the tenant has a rule of that name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import click
import yaml

from hivemind.cli.apps import Target
from hivemind.cli.client import api_path
from hivemind.cli.errors import not_found_as, usage_error
from hivemind.cli.output import (
    examples,
    labels_text,
    output_option,
    print_data,
    print_table,
    status_style,
    when,
)
from hivemind.cli.policies import STDIN, _parse, _plain, _read, apply_documents
from hivemind.cli.session import Session, pass_session
from hivemind.cli.tenants import tenant_option
from hivemind.cli.workflows import age_text
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from hivemind.core.units import TIMESTAMP_HELP, QuantityError, parse_duration, parse_timestamp

MAX_NODES = 100_000
STATE_COLOURS = {"firing": "red", "pending": "yellow", "resolved": "green", "ok": "green", "error": "red",
                 "new": "yellow", "inactive": "yellow", "active": "red", "expired": "green"}  # fmt: skip
MATCHER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(=~|!~|!=|=)(.*)$", re.DOTALL)


class RuleTarget(Target):
    resource, noun = "alert-rules", "alert rule"


class AlertTarget(Target):
    resource, noun = "alerts", "alert"


class SilenceTarget(Target):
    resource, noun = "silences", "silence"


def _state(text: str) -> str:
    return status_style(text, STATE_COLOURS)


def _seconds(value) -> str:
    if not isinstance(value, int | float):
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{int(value)}s"


def _expression(rule: dict) -> str:
    """A rule's condition in one line, PromQL-like."""
    if rule.get("kind") == "event":
        window = (
            f"[{_seconds(rule.get('window'))}]"
            if rule.get("event") in ("workflow_failed", "replica_crash_looping")
            else ""
        )
        return f"{rule.get('event')}{window} {rule.get('comparison')} {rule.get('threshold'):g}"
    matchers = ",".join(f'{m["label"]}{m.get("op", "=")}"{m.get("value", "")}"' for m in rule.get("matchers") or [])
    series = f"{rule.get('metric')}{{{matchers}}}" if matchers else str(rule.get("metric"))
    if rule.get("kind") == "anomaly":
        return f"anomaly({series}[{_seconds(rule.get('window'))}])"
    aggregation = rule.get("aggregation", "last")
    text = series if aggregation == "last" else f"{aggregation}({series}[{_seconds(rule.get('window'))}])"
    if rule.get("by"):
        text = f"{text} by ({', '.join(rule['by'])})"
    return f"{text} {rule.get('comparison')} {rule.get('threshold'):g}"


# hivemind alert --------------------------------------------------------------------------------------


@click.group(
    epilog=examples(
        "hivemind alert ls",
        "hivemind alert rules apply -f rules.yaml",
        "hivemind alert silence create alertname=high-cpu --duration 2h --comment deploy",
        "hivemind alert history --since 1h",
    )
)
def alert() -> None:
    """Alerts: rules over the platform's metrics and events, evaluated every
    HIVEMIND_ALERT_INTERVAL seconds (15 by default).

    An alert is pending while its rule's condition holds for less than the rule's `for`, then
    firing, then resolved; each firing group of alerts is sent to the rule's notifiers once per
    repeat interval, and again when it resolves. A silence keeps matching alerts from notifying.
    Viewers may look (ls, rules ls, history); operators and above change rules and silences.
    """


@alert.command("ls", epilog=examples("hivemind alert ls", "hivemind alert ls --all --rule high-cpu -o json"))
@click.option("--state", type=click.Choice(["pending", "firing", "resolved"]), help="Only alerts in this state.")
@click.option("--severity", type=click.Choice(["critical", "warning", "info"]), help="Only rules of this severity.")
@click.option("--rule", "rule_name", metavar="NAME", help="Only this rule's alerts.")
@click.option("--all", "show_all", is_flag=True, help="Resolved alerts too [default: pending and firing only].")
@tenant_option
@output_option
@pass_session
def alert_ls(session: Session, state, severity, rule_name, show_all: bool, tenant_slug, output: str) -> None:
    """List the tenant's alerts: pending and firing ones unless --all or --state."""
    target = AlertTarget(session, tenant_slug)
    params = {"tenant": target.tenant}
    for key, value in (("state", state), ("severity", severity), ("rule", rule_name)):
        if value:
            params[key] = value
    with not_found_as(f"tenant {target.tenant}"):
        alerts = target.client.list_all(api_path("alerts"), params)
    if not (show_all or state):
        alerts = [a for a in alerts if a.get("state") != "resolved"]
    if output != "table":
        print_data(alerts, output)
        return
    hidden = {"alertname", "severity", "tenant"}
    rows = [
        (
            a["rule"],
            _state(a["state"]) + (" (silenced)" if a.get("silenced") else ""),
            a.get("severity", ""),
            labels_text({k: v for k, v in (a.get("labels") or {}).items() if k not in hidden}) or "-",
            "-" if a.get("value") is None else f"{a['value']:g}",
            age_text(a.get("fired_at") or a.get("active_at")),
            (a.get("annotations") or {}).get("summary", ""),
        )
        for a in alerts
    ]
    print_table(
        ("RULE", "STATE", "SEVERITY", "LABELS", "VALUE", "SINCE", "SUMMARY"),
        rows,
        empty=f"No {'' if show_all or state else 'pending or firing '}alerts in tenant {target.tenant}.",
    )


@alert.command(
    "history", epilog=examples("hivemind alert history", "hivemind alert history --rule high-cpu --since 1d")
)
@click.option("--rule", "rule_name", metavar="NAME", help="Only this rule's alerts.")
@click.option("--since", metavar="WHEN", default="1d", show_default=True, help=f"From when: {TIMESTAMP_HELP}.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="At most this many rows.")
@tenant_option
@output_option
@pass_session
def alert_history(session: Session, rule_name, since: str, limit: int, tenant_slug, output: str) -> None:
    """Every state change (pending, firing, resolved, silenced) and notification of the tenant's
    alerts, newest first."""
    try:
        parse_timestamp(since)
    except QuantityError as exc:
        raise usage_error(f"--since: {exc}") from None
    target = AlertTarget(session, tenant_slug)
    params = {"tenant": target.tenant, "since": since, "limit": limit}
    if rule_name:
        params["rule"] = rule_name
    with not_found_as(f"tenant {target.tenant}"):
        page = target.client.get(api_path("alerts", action="history"), params)
    events = page.get("results", []) if isinstance(page, dict) else page
    if output != "table":
        print_data(events, output)
        return
    hidden = {"alertname", "severity", "tenant"}
    rows = [
        (
            when(e.get("at")),
            e["rule"],
            _state(e["kind"]),
            labels_text({k: v for k, v in (e.get("labels") or {}).items() if k not in hidden}) or "-",
            "-" if e.get("value") is None else f"{e['value']:g}",
            e.get("message", ""),
        )
        for e in events
    ]
    print_table(("AT", "RULE", "EVENT", "LABELS", "VALUE", "MESSAGE"), rows, empty="No alert history in that time.")


# hivemind alert rules ----------------------------------------------------------------------------------


@alert.group(
    "rules",
    epilog=examples(
        "hivemind alert rules ls", "hivemind alert rules apply -f rules.yaml", "hivemind alert rules rm high-cpu"
    ),
)
def rules() -> None:
    """Alert rules: list, show, apply from files, delete."""


@rules.command("ls", epilog=examples("hivemind alert rules ls", "hivemind alert rules ls -o yaml"))
@tenant_option
@output_option
@pass_session
def rules_ls(session: Session, tenant_slug, output: str) -> None:
    """List the tenant's rules: the condition, for how long, severity, and whether the last
    evaluation could run (STATUS error: `rules info` says why)."""
    target = RuleTarget(session, tenant_slug)
    found = target.all()
    if output != "table":
        print_data(found, output)
        return
    rows = [
        (
            r["name"],
            _expression(r),
            _seconds(r.get("for")),
            r.get("severity", ""),
            ",".join(r.get("notifiers") or []) or "-",
            "yes" if r.get("enabled") else "no",
            _state(r.get("status", "")),
        )
        for r in found
    ]
    print_table(
        ("NAME", "CONDITION", "FOR", "SEVERITY", "NOTIFIERS", "ENABLED", "STATUS"),
        rows,
        empty=f"No alert rules in tenant {target.tenant}.",
    )


RULE_KEYS = ("kind", "platform", "metric", "matchers", "aggregation", "window", "by", "comparison", "threshold",
             "event", "for", "severity", "labels", "annotations", "group_by", "notifiers", "repeat_interval",
             "enabled")  # fmt: skip


@rules.command(
    "info", epilog=examples("hivemind alert rules info high-cpu", "hivemind alert rules info high-cpu -o json")
)
@click.argument("name")
@tenant_option
@output_option
@pass_session
def rules_info(session: Session, name: str, tenant_slug, output: str) -> None:
    """Show one rule: its condition and status as comments, then its fields as YAML in the form
    `rules apply -f` takes back (save it, edit it, apply it)."""
    target = RuleTarget(session, tenant_slug)
    found = target.find(name)
    if output != "table":
        print_data(found, output)
        return
    message = f": {found['status_message']}" if found.get("status_message") else ""
    click.echo(f"# Alert rule {found['name']} in tenant {target.tenant}: {_expression(found)}")
    click.echo(f"# Status {found.get('status', '')}{message}; last evaluated {when(found.get('last_evaluated_at'))}.")
    document = {"name": found["name"], **{k: found[k] for k in RULE_KEYS if k in found}}
    if document.get("kind") != "event":
        document.pop("event", None)
    click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False), nl=False)


def _rule_documents(sources: tuple[str, ...]) -> list[tuple[str, str, dict]]:
    """(where, name, fields) of every rule in the files; exit 2 naming the file and the problem."""
    if list(sources).count(STDIN) > 1:
        raise usage_error("-f -: stdin can be read once")
    found: list[tuple[str, str, dict]] = []
    seen: dict[str, str] = {}
    budget = [MAX_NODES]
    for source in sources:
        text, label = _read(source)
        docs = _parse(text, label)
        items = []
        for number, doc in enumerate(docs, 1):
            where = f"{label}: document {number}" if len(docs) > 1 else label
            if isinstance(doc, list):
                items += [(f"{where}: item {i}", item) for i, item in enumerate(doc, 1)]
            else:
                items.append((where, doc))
        if not items:
            raise usage_error(f"{label}: no rule in it: expected `name:` and the rule's fields")
        for where, item in items:
            if not isinstance(item, dict):
                raise usage_error(f"{where}: expected a rule (a mapping with name, metric or event...)")
            name = item.get("name")
            if not is_dns_label(name):
                raise usage_error(f"{where}: name: expected {DNS_LABEL_RULE}, got {str(name)[:70]!r}")
            if name in seen:
                raise usage_error(f"{where}: rule {name} is also in {seen[name]}")
            seen[name] = where
            found.append((where, name, _plain({k: v for k, v in item.items() if k != "name"}, where, budget)))
    return found


@rules.command(
    "apply",
    epilog=examples(
        "hivemind alert rules apply -f rules.yaml",
        "hivemind alert rules info high-cpu > r.yaml && hivemind alert rules apply -f r.yaml",
    ),
)
@click.option("--filename", "-f", "sources", multiple=True, required=True, metavar="FILE",
              help="A YAML or JSON file of rules, or - for stdin (repeat for more files).")  # fmt: skip
@tenant_option
@output_option
@pass_session
def rules_apply(session: Session, sources: tuple[str, ...], tenant_slug, output: str) -> None:
    """Create alert rules from files, or change the tenant's rules of the same names.

    \b
        name: high-cpu
        metric: hivemind_container_cpu_millicores
        matchers: [{label: app, op: "=", value: web}]   # ops =, !=, =~, !~
        aggregation: avg            # avg min max sum count last rate increase
        window: 5m
        by: [app]                   # combine the replicas, like PromQL's `by`
        comparison: ">"
        threshold: 800
        for: 2m
        severity: warning           # critical warning info
        annotations: {summary: "{{ labels.app }} uses {{ value }}m CPU"}
        notifiers: [ops-hook]
        ---
        name: crash-loop
        kind: event
        event: replica_crash_looping   # also workflow_failed, volume_almost_full, node_lost (staff)
        window: 10m
        threshold: 3                # restarts in the window

    Each prints `rule/NAME created` or `rule/NAME configured`. A file that cannot be read or
    has a rule without a valid name exits 2 and nothing is sent; a rule the server refuses
    exits 1 naming the field (an unknown metric: `metric`); the others are still applied.
    """
    documents = _rule_documents(sources)
    target = RuleTarget(session, tenant_slug)
    existing = {r["name"]: r for r in target.all()}

    def apply_one(item: tuple[str, dict]) -> tuple[dict, str]:
        name, fields = item
        if name in existing:
            path = api_path("alert-rules", existing[name]["id"])
            return target.client.request("PATCH", path, json=fields), "configured"
        body = {"tenant": target.tenant, "name": name, **fields}
        return target.client.post(api_path("alert-rules"), body), "created"

    apply_documents(
        [(where, name, (name, fields)) for where, name, fields in documents], kind="rule", tenant=target.tenant,
        output=output, apply_one=apply_one,
    )  # fmt: skip


@rules.command("rm", epilog=examples("hivemind alert rules rm high-cpu", "hivemind alert rules rm high-cpu --yes"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@tenant_option
@pass_session
def rules_rm(session: Session, name: str, yes: bool, tenant_slug) -> None:
    """Delete an alert rule with its alerts and their history. You are asked to type the name
    again unless --yes is given."""
    target = RuleTarget(session, tenant_slug)
    target.delete(name, yes=yes)
    click.echo(f"Deleted alert rule {name} from tenant {target.tenant}.")


# hivemind alert silence ---------------------------------------------------------------------------------


@alert.group(
    "silence",
    epilog=examples(
        "hivemind alert silence create alertname=high-cpu app=~web.* --duration 2h --comment deploy",
        "hivemind alert silence ls",
        "hivemind alert silence expire 12",
    ),
)
def silence() -> None:
    """Silences: while one is active, the tenant's alerts matching all its matchers notify no one."""


def _matchers(values: tuple[str, ...]) -> list[dict]:
    matchers = []
    for value in values:
        match = MATCHER.match(value)
        if not match:
            raise usage_error(
                f"MATCHER: expected LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX or LABEL!~REGEX, got {value!r}"
            )
        label, op, text = match.groups()
        matchers.append({"label": label, "op": op, "value": text})
    return matchers


@silence.command(
    "create",
    epilog=examples(
        "hivemind alert silence create alertname=high-cpu --duration 2h --comment 'deploying'",
        "hivemind alert silence create app=~'web|api' severity!=critical --until 2026-12-01T08:00:00Z",
    ),
)
@click.argument("matchers", nargs=-1, required=True, metavar="MATCHER...")
@click.option("--duration", metavar="DURATION", help="How long, e.g. 30m, 2h, 1d [default: 1h].")
@click.option("--until", metavar="TIME", help="When it ends: an ISO 8601 time (UTC unless it says).")
@click.option("--comment", default="", help="Why (shown with the silence).")
@tenant_option
@output_option
@pass_session
def silence_create(session: Session, matchers, duration, until, comment: str, tenant_slug, output: str) -> None:
    """Silence the alerts whose labels match every MATCHER (LABEL=VALUE, LABEL!=VALUE,
    LABEL=~REGEX, LABEL!~REGEX; alerts carry their rule's name as `alertname`) from now until
    --until or for --duration."""
    body: dict = {"matchers": _matchers(matchers), "comment": comment}
    if duration and until:
        raise usage_error("give --duration or --until, not both")
    if until:
        try:
            moment = datetime.fromisoformat(until)
        except ValueError:
            raise usage_error(
                f"--until: expected an ISO 8601 time such as 2026-12-01T08:00:00Z, got {until!r}"
            ) from None
        body["ends_at"] = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()
    else:
        try:
            body["duration"] = int(parse_duration(duration or "1h", low=60, high=366 * 86400))
        except QuantityError as exc:
            raise usage_error(f"--duration: {exc}") from None
    target = SilenceTarget(session, tenant_slug)
    with not_found_as(f"tenant {target.tenant}"):
        created = target.client.post(api_path("silences"), {"tenant": target.tenant, **body})
    if output != "table":
        print_data(created, output)
        return
    click.echo(f"Silence {created['id']} in tenant {target.tenant} until {when(created.get('ends_at'))}.")


@silence.command("ls", epilog=examples("hivemind alert silence ls", "hivemind alert silence ls --all -o json"))
@click.option("--all", "show_all", is_flag=True, help="Expired silences too.")
@tenant_option
@output_option
@pass_session
def silence_ls(session: Session, show_all: bool, tenant_slug, output: str) -> None:
    """List the tenant's silences (active and pending ones unless --all)."""
    target = SilenceTarget(session, tenant_slug)
    params = {"tenant": target.tenant}
    if not show_all:
        params["expired"] = "false"
    with not_found_as(f"tenant {target.tenant}"):
        found = target.client.list_all(api_path("silences"), params)
    if output != "table":
        print_data(found, output)
        return
    rows = [
        (
            str(s["id"]),
            " ".join(f"{m['label']}{m.get('op', '=')}{m.get('value', '')}" for m in s.get("matchers") or []),
            _state(s.get("state", "")),
            when(s.get("starts_at")),
            when(s.get("ends_at")),
            s.get("created_by") or "-",
            s.get("comment", ""),
        )
        for s in found
    ]
    print_table(
        ("ID", "MATCHERS", "STATE", "STARTS", "ENDS", "BY", "COMMENT"),
        rows,
        empty=f"No {'' if show_all else 'active '}silences in tenant {target.tenant}.",
    )


@silence.command("expire", epilog=examples("hivemind alert silence expire 12"))
@click.argument("silence_id", metavar="ID", type=click.IntRange(1))
@tenant_option
@pass_session
def silence_expire(session: Session, silence_id: int, tenant_slug) -> None:
    """End silence ID now: its alerts notify again from the next evaluation."""
    target = SilenceTarget(session, tenant_slug)
    with not_found_as(f"silence {silence_id}", tenant=target.tenant):
        target.client.post(api_path("silences", silence_id, "expire"), {})
    click.echo(f"Silence {silence_id} expired.")


try:  # the notifiers' CLI (hivemind/cli/notifiers.py) gives `alert test-notifier` too
    from hivemind.cli.notifiers import test_notifier
except ImportError:  # pragma: no cover - only while that module does not exist
    test_notifier = None
if test_notifier is not None:
    alert.add_command(test_notifier, "test-notifier")
