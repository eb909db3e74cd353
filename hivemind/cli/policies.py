"""`hivemind policy`: a tenant's network policies, applied from files the way `kubectl apply` does.

A policy file holds `name:` plus the spec's fields (`apps`, `ingress`, `egress`; their form is
networking/policies.py's), in YAML or JSON; several documents, or a list, hold several policies.
`apply` creates each one, or replaces the spec of the tenant's policy of that name. The file is
read and checked as a whole (exit 2) before anything is sent; the spec itself is the server's to
judge, and a refused one exits 1 naming the field as the server does.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from datetime import date, datetime

import click
import yaml

from hivemind.cli.apps import Target
from hivemind.cli.client import api_path
from hivemind.cli.errors import EXIT_ERROR, ApiError, CliError, not_found, not_found_as, usage_error
from hivemind.cli.output import examples, output_option, print_data, print_table, when
from hivemind.cli.session import Session, pass_session
from hivemind.cli.tenants import tenant_option
from hivemind.cli.workflows import age_text
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label

POLICIES = api_path("network-policies")
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000  # values in one file, counted as aliases expand: a YAML alias bomb stops here
STDIN = "-"


class PolicyTarget(Target):
    """The tenant's network policies, found by name."""

    resource, noun = "network-policies", "policy"


# Reading policy files ---------------------------------------------------------------------------


@dataclass
class Document:
    """One policy as a file gives it: where it is (for messages), its name and its spec."""

    where: str
    name: str
    spec: dict


def _bad(where: str, problem: str) -> CliError:
    return usage_error(f"{where}: {problem}")


def _read(source: str) -> tuple[str, str]:
    """(the text, what to call it in messages): the file, or stdin for `-`."""
    label = "stdin" if source == STDIN else source
    try:
        if source == STDIN:
            raw = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with open(source, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _bad(label, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _bad(label, f"larger than {MAX_FILE_BYTES // 1024} KiB; a policy file is much smaller")
    try:
        return raw.decode("utf-8-sig"), label
    except UnicodeDecodeError as exc:
        raise _bad(label, f"not UTF-8 text (byte {exc.start + 1})") from None


def _parse(text: str, label: str) -> list:
    """Every document of a YAML or JSON text (JSON first when it looks like JSON)."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            if label.lower().endswith(".json"):
                raise _bad(label, f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
            # else: YAML's flow style also starts so ({name: web, ...}); YAML says what is wrong.
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _bad(label, f"not valid YAML or JSON{at}: {problem}") from None


def _plain(value, where: str, budget: list[int]):
    """The value as JSON can carry it: YAML's dates, non-finite numbers and odd keys become text,
    for the server to name the field they are in; far too many values is a usage error."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _bad(where, f"more than {MAX_NODES} values (a YAML alias expanding without end?)")
    if isinstance(value, dict):
        return {str(key): _plain(item, where, budget) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, where, budget) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def read_documents(sources: tuple[str, ...]) -> list[Document]:
    """The policies of every file, in order; exit 2 naming the file and the problem."""
    if list(sources).count(STDIN) > 1:
        raise usage_error("-f -: stdin can be read once")
    documents: list[Document] = []
    seen: dict[str, str] = {}
    budget = [MAX_NODES]
    for source in sources:
        text, label = _read(source)
        docs = _parse(text, label)
        items: list[tuple[str, object]] = []
        for number, doc in enumerate(docs, 1):
            where = f"{label}: document {number}" if len(docs) > 1 else label
            if isinstance(doc, list):
                items += [(f"{where}: item {i}" if len(doc) > 1 else where, item) for i, item in enumerate(doc, 1)]
            else:
                items.append((where, doc))
        if not items:
            raise _bad(label, "no policy in it: expected `name:` and the spec's apps, ingress and egress")
        for where, item in items:
            if not isinstance(item, dict):
                kind = type(item).__name__
                raise _bad(where, f"expected a policy (a mapping with name, apps, ingress, egress), got {kind}")
            if "name" not in item:
                raise _bad(where, "no `name`: every policy needs one")
            name = item["name"]
            if not is_dns_label(name):
                raise _bad(where, f"name: expected {DNS_LABEL_RULE}, got {str(name)[:70]!r}")
            if name in seen:
                raise _bad(where, f"policy {name} is also in {seen[name]}")
            seen[name] = where
            spec = _plain({key: value for key, value in item.items() if key != "name"}, where, budget)
            documents.append(Document(where=where, name=name, spec=spec))
    return documents


# Applying ---------------------------------------------------------------------------------------


def _apply_one(target: PolicyTarget, doc: Document, existing: dict[str, dict]) -> tuple[dict, str]:
    """(the server's policy, "created" or "configured"): POST, or PATCH when the name exists.

    When another client creates (or deletes) the policy between the list and the write, the
    other request is made instead, once.
    """
    for attempt in (1, 2):
        found = existing.get(doc.name)
        try:
            if found is None:
                body = {"tenant": target.tenant, "name": doc.name, "spec": doc.spec}
                return target.client.post(POLICIES, body), "created"
            path = api_path("network-policies", found["id"])
            return target.client.request("PATCH", path, json={"spec": doc.spec}), "configured"
        except ApiError as exc:
            raced = exc.status in (400, 409) if found is None else exc.status == 404
            if attempt == 2 or not raced:
                raise
            now = {p["name"]: p for p in target.all()}
            if (doc.name in now) == (found is not None):
                raise  # not a race: the name is where it was, and the error stands
            existing.clear()
            existing.update(now)
    raise AssertionError("unreachable")  # pragma: no cover


def _warn(name: str, warnings: list[str]) -> None:
    for warning in warnings or []:
        click.echo(f"warning: policy/{name}: {warning}", err=True)


# hivemind policy --------------------------------------------------------------------------------


@click.group(
    epilog=examples(
        "hivemind policy apply -f web-policy.yaml",
        "hivemind policy ls",
        "hivemind policy info web-ingress",
        "hivemind policy rm web-ingress",
    )
)
def policy() -> None:
    """Network policies: which traffic may reach (leave) a tenant's apps.

    As in Kubernetes, an app selected by a policy with ingress (egress) rules gets only the
    traffic some policy allows, IPv4 and IPv6 alike; a policy without ingress (egress) leaves
    that direction alone, and an empty list denies it all. Peers are apps of the tenant (or of
    another tenant, by slug), networks of the tenant, or address prefixes. Every node applies a
    change within a second or two. Viewers may look (ls, info); operators and above apply and
    remove policies.
    """


@policy.command("ls", epilog=examples("hivemind policy ls", "hivemind policy ls --tenant acme -o yaml"))
@tenant_option
@output_option
@pass_session
def policy_ls(session: Session, tenant_slug: str | None, output: str) -> None:
    """List the tenant's network policies: the apps each selects ("(all)": every app of the
    tenant) and how many ingress and egress rules it has ("-": that direction is left alone,
    0: all of it is denied)."""
    target = PolicyTarget(session, tenant_slug)
    policies = target.all()
    if output != "table":
        print_data(policies, output)
        return

    def count(spec: dict, direction: str) -> str:
        rules = spec.get(direction)
        return "-" if rules is None else str(len(rules))

    rows = []
    for p in policies:
        spec = p.get("spec") or {}
        selector = [*(spec.get("apps") or []), *(f"{k}={v}" for k, v in (spec.get("labels") or {}).items())]
        apps = ",".join(selector) or "(all)"
        rows.append((p["name"], apps, count(spec, "ingress"), count(spec, "egress"), age_text(p.get("created_at"))))
    print_table(
        ("NAME", "APPS", "INGRESS", "EGRESS", "AGE"), rows, empty=f"No network policies in tenant {target.tenant}."
    )


@policy.command("info", epilog=examples("hivemind policy info web-ingress", "hivemind policy info web-ingress -o json"))
@click.argument("name")
@tenant_option
@output_option
@pass_session
def policy_info(session: Session, name: str, tenant_slug: str | None, output: str) -> None:
    """Show one policy: its spec as YAML, in the form `policy apply -f` takes back (save it,
    edit it, apply it), and its warnings (what it names that does not exist) as comments.

    json/yaml print the API's policy, with its spec in normal form and its warnings.
    """
    target = PolicyTarget(session, tenant_slug)
    found = target.find(name)
    with not_found_as(f"policy {name}", tenant=target.tenant):
        found = target.client.get(api_path("network-policies", found["id"]))
    if output != "table":
        print_data(found, output)
        return
    click.echo(
        f"# Network policy {found.get('name', name)} in tenant {target.tenant}; "
        f"created {when(found.get('created_at'))}, updated {when(found.get('updated_at'))}."
    )
    document = {"name": found.get("name", name), **(found.get("spec") or {})}
    click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False), nl=False)
    warnings = found.get("warnings") or []
    if warnings:
        click.echo("\n# Warnings (it matches nothing for these):")
        for warning in warnings:
            click.echo(f"#   {warning}")


@policy.command(
    "apply",
    epilog=examples(
        "hivemind policy apply -f web-policy.yaml",
        "hivemind policy apply -f policies.yaml -f db.json --tenant acme",
        "hivemind policy info web-ingress > p.yaml && hivemind policy apply -f p.yaml",
        "hivemind policy apply -f - < web-policy.yaml",
    ),
)
@click.option(
    "--filename",
    "-f",
    "sources",
    multiple=True,
    required=True,
    metavar="FILE",
    help="A YAML or JSON file of policies, or - for stdin (repeat for more files).",
)
@tenant_option
@output_option
@pass_session
def policy_apply(session: Session, sources: tuple[str, ...], tenant_slug: str | None, output: str) -> None:
    """Create or replace network policies from files, as `kubectl apply` does.

    Each policy is `name:` (a DNS label) plus the spec's fields; YAML documents separated
    by `---`, or a list, hold several. For example, to let only the api app and one prefix
    reach the web app, on TCP port 80:

    \b
        name: web-ingress
        apps: [web]                 # [] or absent: every app of the tenant (or labels: {tier: web})
        ingress:                    # absent: ingress left alone; []: all denied
        - from:                     # [] or absent: from anywhere
          - app: api                # an app of the tenant
          - cidr: 192.0.2.0/24      # also {app, tenant: slug}, {network: name}
          ports:                    # [] or absent: every port
          - {protocol: tcp, port: 80}
        # egress: [{to: [...], ports: [...]}]   likewise, for what web may reach

    A policy the tenant has is replaced (its spec is the file's), another is created; each
    prints `policy/NAME created` or `policy/NAME configured`, and what it names that does
    not exist (yet) as a warning on stderr: it is kept, it just matches nothing for it.

    A file that cannot be read, is not YAML or JSON, or has a policy without a valid name
    exits 2 naming the file, and nothing is sent. A spec the server refuses exits 1 naming
    the field as the server does (e.g. ingress[0].ports[0].port); the other policies are
    still applied.
    """
    documents = read_documents(sources)
    target = PolicyTarget(session, tenant_slug)
    existing = {p["name"]: p for p in target.all()}
    apply_documents(
        [(doc.where, doc.name, doc) for doc in documents], kind="policy", tenant=target.tenant, output=output,
        apply_one=lambda doc: _apply_one(target, doc, existing),
        after=lambda name, result: _warn(name, result.get("warnings") or []),
    )  # fmt: skip


def apply_documents(documents, *, kind: str, tenant: str, output: str, apply_one, after=None) -> None:
    """Apply (where, name, document) one by one, as `kubectl apply -f` does: `apply_one(document)`
    answers (result, "created" or "configured"), printed as `KIND/NAME VERB`; a document the
    server refuses (400) is reported with where it came from and the others still go (exit 1
    at the end); any other error stops at once. `after(name, result)` follows each success."""
    applied: list[dict] = []
    failed = False
    for where, name, document in documents:
        try:
            result, verb = apply_one(document)
        except ApiError as exc:
            if exc.status == 404 and exc.message.startswith("tenant "):
                raise not_found(f"tenant {tenant}") from exc
            if exc.status != 400:
                raise CliError(f"{kind}/{name}: {exc.message}", exc.exit_code) from exc
            click.echo(f"error: {kind}/{name} ({where}): {exc.message}", err=True)
            failed = True
            continue
        applied.append(result)
        shown = result.get("name", name)
        if output == "table":
            click.echo(f"{kind}/{shown} {verb}")
        if after is not None:
            after(shown, result)
    if output != "table":
        print_data(applied, output)
    if failed:
        sys.exit(EXIT_ERROR)


@policy.command("rm", epilog=examples("hivemind policy rm web-ingress", "hivemind policy rm web-ingress --yes"))
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the name to confirm.")
@tenant_option
@pass_session
def policy_rm(session: Session, name: str, yes: bool, tenant_slug: str | None) -> None:
    """Delete a network policy. The traffic it allowed is refused again wherever another policy
    still isolates the app; an app no policy selects any more talks freely. You are asked to type
    the name again unless --yes is given."""
    target = PolicyTarget(session, tenant_slug)
    target.delete(name, yes=yes)
    click.echo(f"Deleted policy {name} from tenant {target.tenant}.")
