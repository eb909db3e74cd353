"""`hivemind workflow`: the platform's long operations (deploys, snapshots, backups) and their steps.

`watch_workflow` is how every command that starts a workflow waits for it, so `app deploy`
and `workflow watch` show progress and report a failure the same way.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Collection
from contextlib import nullcontext
from datetime import UTC, datetime

import click

from hivemind.cli.client import ApiClient, api_path
from hivemind.cli.errors import EXIT_ERROR, EXIT_OK, not_found_as
from hivemind.cli.output import (
    examples,
    output_option,
    print_data,
    print_fields,
    print_table,
    progress_style,
    when,
)
from hivemind.cli.session import Session, pass_session
from hivemind.cli.tenants import tenant_option

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports after Ctrl-C
STATES = ("pending", "running", "compensating", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
ERROR_WIDTH = 60
DEFAULT_INTERVAL = 1.0


def seconds_text(value: float | None) -> str:
    """A duration the way people say it: 0.3s, 42s, 3m05s, 2h10m, 1d04h."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f}s"
    whole = round(value)
    if whole < 60:
        return f"{whole}s"
    minutes, seconds = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def age_text(timestamp: str | None) -> str:
    """How long ago, in one unit, like kubectl's AGE column: 45s, 12m, 5h, 3d."""
    if not timestamp:
        return "-"
    try:
        seconds = max((datetime.now(UTC) - datetime.fromisoformat(timestamp)).total_seconds(), 0)
    except (ValueError, TypeError):
        return timestamp
    if seconds < 120:
        return f"{int(seconds)}s"
    if seconds < 2 * 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def short(text: str | None, width: int = ERROR_WIDTH) -> str:
    """The first line of an error, cut to fit a table cell."""
    if not text:
        return "-"
    line = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def progress_text(workflow: dict) -> str:
    return f"{workflow.get('steps_done', 0)}/{workflow.get('step_count', 0)}"


def attempts_text(count: int) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


def step_label(step: dict, step_count: int) -> str:
    """`step 2/5 app.pull`, or `undo step 2 app.pull` for a compensation."""
    if step.get("phase") == "compensate":
        undoes = step.get("compensates")
        number = undoes + 1 if undoes is not None else step.get("index", 0) + 1
        return f"undo step {number} {step.get('name', '')}"
    return f"step {step.get('index', 0) + 1}/{step_count} {step.get('name', '')}"


def step_line(step: dict, step_count: int) -> str | None:
    """What happened to a step, in one line; None for a step that has not been touched yet."""
    label, state, attempts = step_label(step, step_count), step.get("state"), step.get("attempts", 0)
    if state == "pending":
        return f"{label} will retry: {step.get('error')}" if attempts else None
    if state == "running":
        return f"{label} running (attempt {attempts} of {step.get('max_attempts')})"
    if state == "succeeded":
        on = f" on attempt {attempts}" if attempts > 1 else ""
        return f"{label} succeeded{on} in {seconds_text(step.get('duration'))}"
    if state == "failed":
        return f"{label} failed after {attempts_text(attempts)}: {step.get('error')}"
    if state == "compensated":
        return None  # its `undo step` line says so
    return f"{label} {state}"


def workflow_line(workflow: dict, *, first: bool = False) -> str:
    """The workflow's state in one line; the first one also says what it is."""
    number, state = workflow["id"], workflow.get("state", "")
    if first:
        what = f"workflow {number} ({workflow.get('kind')} in tenant {workflow.get('tenant')}) {progress_style(state)}"
        line = f"{what}: {progress_text(workflow)} steps done"
    else:
        line = f"workflow {number} {progress_style(state)}"
        if state == "succeeded":
            line += f" in {seconds_text(workflow.get('duration'))}"
        elif state == "compensating":
            line += f": {workflow.get('error') or 'a step failed'}; undoing the steps that ran"
    if state == "pending" and (workflow.get("runs") or 1) > 1:
        line += f" (run {workflow['runs']})"
    if state == "pending" and workflow.get("waiting_on"):
        line += f", waiting for the {workflow['waiting_on']}"
    if workflow.get("cancel_requested") and state == "running":
        line += "; cancel requested: it stops after its current step"
    return line


def failure_message(workflow: dict) -> str:
    """Why a watched workflow did not end the way the caller wanted, naming the failed step."""
    number, state, error = workflow["id"], workflow.get("state"), workflow.get("error") or ""
    failed = workflow.get("failed_step")
    if state == "failed" and failed:
        message = (
            f"workflow {number} failed at step {failed['index'] + 1} ({failed['name']}) "
            f"after {attempts_text(failed['attempts'])}: {failed['error']}"
        )
        _, found, compensation = error.partition("; compensation ")
        return message + (f"; compensation {compensation}" if found else "")
    if state == "failed":
        return f"workflow {number} failed: {error or 'no error recorded'}"
    if state == "cancelled":
        return f"workflow {number} was cancelled" + (f" ({error})" if error and error != "cancelled" else "")
    if state == "succeeded":
        return f"workflow {number} succeeded before the cancel took effect"
    return f"workflow {number} ended {state}"


class _Lines:
    """One line per change of the workflow or a step: for pipes, logs and CI."""

    def __init__(self) -> None:
        self.workflow_seen: tuple | None = None
        self.steps_seen: dict[int, tuple] = {}

    def update(self, workflow: dict) -> None:
        first = self.workflow_seen is None
        seen = (workflow.get("state"), workflow.get("waiting_on"), workflow.get("cancel_requested"))
        header = workflow_line(workflow, first=first) if seen != self.workflow_seen else None
        self.workflow_seen = seen
        lines: dict[str, list[str]] = {"forward": [], "compensate": []}
        for step in workflow.get("steps") or []:
            step_seen = (step.get("state"), step.get("attempts"))
            if self.steps_seen.get(step["id"]) != step_seen:
                self.steps_seen[step["id"]] = step_seen
                line = step_line(step, workflow.get("step_count", 0))
                if line:
                    lines[step.get("phase", "forward")].append(f"  {line}")
        # In the order things happened: the forward steps, then the turn to undo them, then the undoing.
        state = workflow.get("state")
        if first:
            click.echo(header)
            header = workflow_line(workflow) if state in FINISHED else None
        going_forward = state in ("pending", "running")
        for line in [
            *([header] if header and going_forward else []),
            *lines["forward"],
            *([header] if header and state == "compensating" else []),
            *lines["compensate"],
            *([header] if header and state in FINISHED else []),
        ]:
            click.echo(line)

    def close(self, workflow: dict | None) -> None:
        pass


class _Bar:
    """A progress bar redrawn in place, for a terminal."""

    def __init__(self, workflow: dict) -> None:
        self.bar = click.progressbar(
            length=max(workflow.get("step_count") or 0, 1),
            show_pos=True,
            show_eta=False,
            show_percent=False,
            item_show_func=lambda item: item,
            width=30,
        )
        self.closed = False

    def update(self, workflow: dict) -> None:
        state = workflow.get("state", "")
        self.bar.label = f"workflow {workflow['id']} {progress_style(state)}"
        # A workflow may plan more steps as it runs (a deploy's first step plans the starts).
        self.bar.length = max(workflow.get("step_count") or 0, 1)
        self.bar.pos = workflow.get("steps_done", 0)
        steps = workflow.get("steps") or []
        active = next((s for s in steps if s.get("state") == "running"), None)
        active = active or next((s for s in steps if s.get("state") == "pending" and s.get("attempts")), None)
        if active is not None:
            self.bar.current_item = short(step_line(active, workflow.get("step_count", 0)))
        elif state == "pending" and workflow.get("waiting_on"):
            self.bar.current_item = short(f"waiting for the {workflow['waiting_on']}")
        else:
            self.bar.current_item = None
        self.bar.render_progress()

    def close(self, workflow: dict | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.bar.render_finish()
        if workflow is not None and workflow.get("state") in FINISHED:
            click.echo(workflow_line(workflow))


class _Quiet:
    """-o json/yaml: nothing until the end, then the finished workflow."""

    def update(self, workflow: dict) -> None:
        pass

    def close(self, workflow: dict | None) -> None:
        pass


def watch_workflow(
    client: ApiClient,
    workflow_id: int,
    *,
    interval: float = DEFAULT_INTERVAL,
    output: str = "table",
    expect: Collection[str] = ("succeeded",),
) -> int:
    """Follow a workflow until it finishes; the exit code: 0 when it ends in one of `expect`.

    Table output draws a progress bar on a terminal and prints one line per change
    otherwise; json/yaml print only the finished workflow. When it ends otherwise, one
    `error:` line on stderr names the failed step, its attempts and its error, and the
    answer is 1. Ctrl-C stops watching (130); the workflow itself goes on.
    """
    display: _Lines | _Bar | _Quiet | None = None
    workflow: dict | None = None
    try:
        while True:
            with not_found_as(f"workflow {workflow_id}", tenant=client.tenant):
                workflow = client.get(api_path("workflows", workflow_id))
            if display is None:
                if output != "table":
                    display = _Quiet()
                elif sys.stdout.isatty():
                    display = _Bar(workflow)
                else:
                    display = _Lines()
            display.update(workflow)
            if workflow.get("state") in FINISHED:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        if display is not None:
            display.close(None)
        state = f" ({workflow.get('state')})" if workflow else ""
        click.echo(
            f"stopped watching workflow {workflow_id}{state}; it goes on "
            f"(`hivemind workflow cancel {workflow_id}` cancels it)",
            err=True,
        )
        return EXIT_INTERRUPTED
    finally:
        if display is not None:
            display.close(workflow if workflow and workflow.get("state") in FINISHED else None)
    if output != "table":
        print_data(workflow, output)
    if workflow.get("state") in expect:
        return EXIT_OK
    click.echo(f"error: {failure_message(workflow)}", err=True)
    return EXIT_ERROR


workflow_id_argument = click.argument("workflow_id", metavar="ID", type=click.IntRange(min=1))

interval_option = click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_INTERVAL,
    show_default=True,
    metavar="SECONDS",
    help="How often to ask the server while watching.",
)


@click.group(epilog=examples("hivemind workflow ls --active", "hivemind workflow watch 12"))
def workflow() -> None:
    """Workflows: long operations (deploys, snapshots, backups) run as steps.

    Steps run in order and transient errors are retried; when a step fails for good,
    the steps that ran are undone (compensated) in reverse order. Viewers may look;
    operators and above may cancel and retry.
    """


@workflow.command(
    "ls",
    epilog=examples(
        "hivemind workflow ls",
        "hivemind workflow ls --state running --state pending",
        "hivemind workflow ls --finished --kind noop --limit 10 -o json",
    ),
)
@click.option(
    "--state", "states", multiple=True, type=click.Choice(STATES), help="Only workflows in this state (repeatable)."
)
@click.option("--kind", metavar="KIND", help="Only workflows of this kind (e.g. noop).")
@click.option("--subject", metavar="SUBJECT", help="Only workflows working on this, e.g. app:12.")
@click.option(
    "--active/--finished",
    default=None,
    help="Only unfinished (pending, running, compensating) or only finished workflows [default: both].",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    metavar="N",
    help="Show at most this many, newest first.",
)
@tenant_option
@output_option
@pass_session
def workflow_ls(
    session: Session,
    states: tuple[str, ...],
    kind: str | None,
    subject: str | None,
    active: bool | None,
    limit: int,
    tenant_slug: str | None,
    output: str,
) -> None:
    """List workflows, newest first.

    They are the tenant's given by --tenant or the context; platform staff working in no
    tenant see every tenant's.
    """
    client = session.client(tenant=tenant_slug)
    params: dict = {"state": list(states), "kind": kind, "subject": subject, "limit": limit}
    if active is not None:
        params["active"] = "true" if active else "false"
    items: list[dict] = []
    count = 0
    with not_found_as(f"tenant {client.tenant}") if client.tenant else nullcontext():
        while len(items) < limit:
            page = client.get(api_path("workflows"), {**params, "offset": len(items)})
            results = page.get("results", [])
            count = page.get("count", len(results))
            items.extend(results)
            if not results or not page.get("next"):
                break
    # Newest first whatever order the pages came in.
    items = sorted(items[:limit], key=lambda w: w["id"], reverse=True)
    if output != "table":
        print_data(items, output)
        return
    rows = [
        (
            str(w["id"]),
            w.get("kind", ""),
            w.get("tenant", ""),
            w.get("subject") or "-",
            w.get("state", ""),
            progress_text(w),
            (w.get("current_step") or "-") if w.get("state") == "running" else "-",
            age_text(w.get("created_at")),
            seconds_text(w.get("duration")),
            short(w.get("error")),
        )
        for w in items
    ]
    print_table(
        ("ID", "KIND", "TENANT", "SUBJECT", "STATE", "PROGRESS", "STEP", "AGE", "DURATION", "ERROR"),
        rows,
        styles={4: progress_style},
        empty="No workflows.",
    )
    if count > len(items):
        click.echo(f"Showing {len(items)} of {count} workflows; --limit shows more.", err=True)


@workflow.command("show", epilog=examples("hivemind workflow show 12", "hivemind workflow show 12 -o yaml"))
@workflow_id_argument
@output_option
@pass_session
def workflow_show(session: Session, workflow_id: int, output: str) -> None:
    """Show one workflow and its steps.

    Compensation steps are numbered by the step they undo.
    """
    client = session.client()
    with not_found_as(f"workflow {workflow_id}", tenant=client.tenant):
        found = client.get(api_path("workflows", workflow_id))
    if output != "table":
        print_data(found, output)
        return
    state = found.get("state", "")
    if found.get("cancel_requested") and state not in FINISHED:
        state_text = progress_style(state) + " (cancel requested)"
    else:
        state_text = progress_style(state)
    fields = [
        ("ID", str(found["id"])),
        ("Kind", found.get("kind", "")),
        ("Tenant", found.get("tenant", "")),
        ("Subject", found.get("subject") or "-"),
        ("State", state_text),
        ("Progress", f"{progress_text(found)} steps done"),
    ]
    if state == "running" and found.get("current_step"):
        fields.append(("Current step", found["current_step"]))
    if found.get("waiting_on"):
        fields.append(("Waiting for", found["waiting_on"]))
    failed = found.get("failed_step")
    if failed:
        fields.append(
            ("Failed step", f"{failed['index'] + 1} ({failed['name']}) after {attempts_text(failed['attempts'])}")
        )
    locks = ", ".join(f"{lock['key']} ({lock['mode']})" for lock in found.get("locks") or [])
    fields += [
        ("Error", found.get("error") or "-"),
        ("Params", json.dumps(found.get("params") or {}, ensure_ascii=False)),
        ("Locks", locks or "-"),
        ("Runs", str(found.get("runs", 1))),
        ("Created by", found.get("created_by") or "-"),
        ("Created", when(found.get("created_at"))),
        ("Started", when(found.get("started_at"))),
        ("Finished", when(found.get("finished_at"))),
        ("Duration", seconds_text(found.get("duration"))),
        ("Trace ID", found.get("trace_id") or "-"),
    ]
    print_fields(fields)
    click.echo()
    rows = []
    for step in found.get("steps") or []:
        compensation = step.get("phase") == "compensate"
        number = step.get("compensates") if compensation and step.get("compensates") is not None else step["index"]
        rows.append(
            (
                step.get("phase", ""),
                str(number + 1),
                step.get("name", ""),
                step.get("state", ""),
                f"{step.get('attempts', 0)}/{step.get('max_attempts', 0)}",
                seconds_text(step.get("duration")),
                short(step.get("error")),
            )
        )
    print_table(
        ("PHASE", "#", "NAME", "STATE", "ATTEMPTS", "DURATION", "ERROR"),
        rows,
        styles={3: progress_style},
        empty="No steps.",
    )


@workflow.command(
    "watch",
    epilog=examples(
        "hivemind workflow watch 12",
        "hivemind workflow watch 12 --interval 5 | tee deploy.log",
        "hivemind workflow watch 12 -o json > result.json",
    ),
)
@workflow_id_argument
@interval_option
@output_option
@pass_session
def workflow_watch(session: Session, workflow_id: int, interval: float, output: str) -> None:
    """Follow a workflow until it finishes.

    A progress bar on a terminal, one line per change otherwise. Exits 0 when the
    workflow succeeds and 1 when it fails or is cancelled, naming the failed step on
    stderr. Ctrl-C stops watching (exit 130) and leaves the workflow running.
    """
    sys.exit(watch_workflow(session.client(), workflow_id, interval=interval, output=output))


def new_state_line(workflow: dict) -> str:
    """What a cancel or retry left the workflow doing."""
    state = workflow.get("state", "")
    line = f"Workflow {workflow['id']} is now {progress_style(state)}"
    if (workflow.get("runs") or 1) > 1:
        line += f" (run {workflow['runs']})"
    if state == "pending" and workflow.get("waiting_on"):
        line += f", waiting for the {workflow['waiting_on']}"
    if state == "running" and workflow.get("cancel_requested"):
        line += ", cancel requested: it stops after its current step, then undoes the steps that ran"
    elif state == "compensating":
        line += ": undoing the steps that ran"
    return line + "."


def _act(session: Session, workflow_id: int, action: str, wait: bool, interval: float, output: str) -> None:
    client = session.client()
    with not_found_as(f"workflow {workflow_id}", tenant=client.tenant):
        changed = client.post(api_path("workflows", workflow_id, action))
    if output == "table":
        click.echo(new_state_line(changed))
    elif not wait:  # with --wait, scripts get the finished workflow instead
        print_data(changed, output)
    if wait:
        expect = ("cancelled",) if action == "cancel" else ("succeeded",)
        sys.exit(watch_workflow(client, workflow_id, interval=interval, output=output, expect=expect))


@workflow.command(
    "cancel",
    epilog=examples("hivemind workflow cancel 12", "hivemind workflow cancel 12 --wait"),
)
@workflow_id_argument
@click.option("--wait", is_flag=True, help="Then watch until it is cancelled (exit 0) or ends otherwise (exit 1).")
@interval_option
@output_option
@pass_session
def workflow_cancel(session: Session, workflow_id: int, wait: bool, interval: float, output: str) -> None:
    """Cancel a workflow (operators and above).

    A pending workflow is cancelled at once; a running one stops after its current
    step and undoes the steps that ran. A finished workflow cannot be cancelled (exit 7).
    """
    _act(session, workflow_id, "cancel", wait, interval, output)


@workflow.command(
    "retry",
    epilog=examples("hivemind workflow retry 12", "hivemind workflow retry 12 --wait"),
)
@workflow_id_argument
@click.option("--wait", is_flag=True, help="Then watch until it finishes: exit 0 when it succeeds, 1 otherwise.")
@interval_option
@output_option
@pass_session
def workflow_retry(session: Session, workflow_id: int, wait: bool, interval: float, output: str) -> None:
    """Run a failed workflow again from its failed step (operators and above).

    Steps that were undone run again; the failed step starts over with fresh
    attempts. Only a failed workflow can be retried (exit 7 otherwise).
    """
    _act(session, workflow_id, "retry", wait, interval, output)
