"""`hivemind workflow` against the real web process (gunicorn) and real Celery workers."""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest
import requests
import yaml

from hivemind.workflows import engine
from hivemind.workflows.models import Step, Workflow
from tests.cli.conftest import closed_server, login_as, one_error_line
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LS_HEADER = ["ID", "KIND", "TENANT", "SUBJECT", "STATE", "PROGRESS", "STEP", "AGE", "DURATION", "ERROR"]


def noop(world, tenant=None, **params) -> Workflow:
    """A noop workflow started by staff; it commits and is dispatched at once (no transaction here)."""
    return engine.workflow_create(kind="noop", tenant=tenant or world.a, params=params, actor=world.users["staff"])


def without_duration(workflow: dict) -> dict:
    return {key: value for key, value in workflow.items() if key != "duration"}


def state_of(workflow: Workflow) -> str:
    return Workflow.objects.values_list("state", flat=True).get(pk=workflow.pk)


def test_ls_shows_the_callers_tenant_only_in_every_format(cli, web_server, world):
    running = noop(world, steps=2, locks=[{"key": "volume:1", "mode": "exclusive"}])
    cancelled = noop(world, steps=3)
    engine.workflow_cancel(workflow=cancelled, actor=world.users["staff"])  # no step running: cancelled at once
    assert state_of(cancelled) == "cancelled"
    elsewhere = noop(world, tenant=world.b)
    login_as(cli, web_server, world, "viewer")  # the context works in tenant-a

    table = cli("workflow", "ls")
    assert table.code == 0, table
    header, *rows = table.out.splitlines()
    assert header.split() == LS_HEADER
    assert [row.split()[0] for row in rows] == [str(cancelled.pk), str(running.pk)]  # newest first
    assert rows[1].split()[1:7] == ["noop", "tenant-a", "volume:1", "running", "0/2", "noop.step"]
    assert rows[1].index("running") == header.index("STATE")  # columns line up
    assert rows[0].split()[4:7] == ["cancelled", "0/3", "-"]
    assert rows[0].rstrip().endswith("cancelled")  # its error
    assert "\x1b[" not in table.out  # no colour into a pipe

    listed = json.loads(cli("workflow", "ls", "-o", "json").out)
    assert [(w["id"], w["tenant"], w["state"]) for w in listed] == [
        (cancelled.pk, "tenant-a", "cancelled"),
        (running.pk, "tenant-a", "running"),
    ]
    assert listed[1]["subject"] == "volume:1"
    assert listed[1]["step_count"] == 2
    as_yaml = yaml.safe_load(cli("workflow", "ls", "-o", "yaml").out)
    assert [without_duration(w) for w in as_yaml] == [without_duration(w) for w in listed]

    def ids(*args: str) -> list[int]:
        result = cli("workflow", "ls", "-o", "json", *args)
        assert result.code == 0, result
        return [w["id"] for w in json.loads(result.out)]

    assert ids("--active") == [running.pk]
    assert ids("--finished") == [cancelled.pk]
    assert ids("--state", "cancelled", "--state", "pending") == [cancelled.pk]
    assert ids("--subject", "volume:1") == [running.pk]
    assert ids("--kind", "backup") == []
    assert elsewhere.pk not in ids()

    limited = cli("workflow", "ls", "--limit", "1")
    assert limited.code == 0, limited
    assert len(limited.out.splitlines()) == 2
    assert limited.err.strip() == "Showing 1 of 2 workflows; --limit shows more."

    empty = cli("workflow", "ls", "--kind", "backup")
    assert (empty.code, empty.out, empty.err.strip()) == (0, "", "No workflows.")

    login_as(cli, web_server, world, "staff")
    assert cli("context", "use", "--none").code == 0  # staff working in no tenant see every tenant's
    assert {running.pk, cancelled.pk, elsewhere.pk} <= set(ids())
    assert ids("--tenant", "tenant-b") == [elsewhere.pk]
    unknown = cli("workflow", "ls", "--tenant", "nope")
    assert unknown.code == 6, unknown
    assert one_error_line(unknown) == "tenant nope not found"


def test_ls_limit_shows_the_newest(cli, web_server, world):
    made = [noop(world, steps=1) for _ in range(3)]
    login_as(cli, web_server, world, "viewer")
    result = cli("workflow", "ls", "--limit", "2", "-o", "json")
    assert result.code == 0, result
    assert [w["id"] for w in json.loads(result.out)] == [made[2].pk, made[1].pk]


def test_show_in_every_format_and_another_tenants_workflow_is_not_found(cli, web_server, world):
    mine = noop(world, steps=2, sleep=0.5)
    theirs = noop(world, tenant=world.b)
    plain = login_as(cli, web_server, world, "viewer")

    shown = cli("workflow", "show", str(mine.pk))
    assert shown.code == 0, shown
    summary, steps = shown.out.split("\n\n")
    fields = dict(line.split(":", 1) for line in summary.splitlines())
    assert {key: value.strip() for key, value in fields.items() if key in ("ID", "Kind", "Tenant", "State")} == {
        "ID": str(mine.pk),
        "Kind": "noop",
        "Tenant": "tenant-a",
        "State": "running",
    }
    assert fields["Progress"].strip() == "0/2 steps done"
    assert fields["Created by"].strip() == "staff"
    assert json.loads(fields["Params"])["sleep"] == 0.5
    header, *rows = steps.splitlines()
    assert header.split() == ["PHASE", "#", "NAME", "STATE", "ATTEMPTS", "DURATION", "ERROR"]
    assert [row.split() for row in rows] == [
        ["forward", "1", "noop.step", "pending", "0/4", "-", "-"],
        ["forward", "2", "noop.step", "pending", "0/4", "-", "-"],
    ]

    api = requests.get(
        f"{web_server}/api/v1/workflows/{mine.pk}/", headers={"Authorization": f"Bearer {plain}"}, timeout=10
    ).json()
    as_json = json.loads(cli("workflow", "show", str(mine.pk), "-o", "json").out)
    assert without_duration(as_json) == without_duration(api)  # a running workflow's duration grows
    as_yaml = yaml.safe_load(cli("workflow", "show", str(mine.pk), "-o", "yaml").out)
    assert without_duration(as_yaml) == without_duration(api)

    hidden = cli("workflow", "show", str(theirs.pk))
    assert hidden.code == 6, hidden
    assert one_error_line(hidden) == f"workflow {theirs.pk} not found in tenant tenant-a"
    missing = cli("workflow", "watch", "999999")
    assert missing.code == 6, missing
    assert one_error_line(missing) == "workflow 999999 not found in tenant tenant-a"
    assert cli("workflow", "show", "twelve").code == 2


def test_watch_of_a_workflow_that_succeeds(cli, web_server, world, platform_processes):
    platform_processes("worker")
    login_as(cli, web_server, world, "viewer")
    workflow = noop(world, steps=3, sleep=0.3)

    watched = cli("workflow", "watch", str(workflow.pk), "--interval", "0.2")
    assert watched.code == 0, watched
    assert watched.err == ""
    lines = watched.out.splitlines()
    assert lines[0].startswith(f"workflow {workflow.pk} (noop in tenant tenant-a) "), watched
    for number in (1, 2, 3):
        assert any(line.strip().startswith(f"step {number}/3 noop.step succeeded in ") for line in lines), watched
    assert lines[-1].startswith(f"workflow {workflow.pk} succeeded in "), watched
    assert state_of(workflow) == "succeeded"

    finished = cli("workflow", "watch", str(workflow.pk), "-o", "json")
    assert finished.code == 0, finished
    assert json.loads(finished.out)["steps_done"] == 3

    # On a terminal: a bar redrawn in place, in colour.
    shown = cli.on_terminal("workflow", "watch", str(workflow.pk))
    assert shown.code == 0, shown
    assert "\r" in shown.out
    assert "3/3" in shown.out
    assert f"workflow {workflow.pk} \x1b[32msucceeded" in shown.out


def test_watch_of_a_workflow_that_fails_names_the_step(cli, web_server, world, platform_processes):
    platform_processes("worker")
    login_as(cli, web_server, world, "viewer")
    # A permanent error (no retries); each step takes 0.5 s, so polls see step 1 succeed.
    workflow = noop(world, steps=3, fail_at=2, sleep=0.5)

    watched = cli("workflow", "watch", str(workflow.pk), "--interval", "0.2")
    assert watched.code == 1, watched
    assert one_error_line(watched) == (
        f"workflow {workflow.pk} failed at step 2 (noop.step) after 1 attempt: "
        "RuntimeError: noop step 2 fails on purpose (attempt 1)"
    )
    out = watched.out
    assert "step 1/3 noop.step succeeded" in out
    assert "step 2/3 noop.step failed after 1 attempt: RuntimeError" in out
    assert "step 3/3 noop.step skipped" in out
    assert "undo step 1 noop.step succeeded" in out
    assert out.splitlines()[-1] == f"workflow {workflow.pk} failed"

    shown = cli("workflow", "show", str(workflow.pk))
    assert "2 (noop.step) after 1 attempt" in shown.out
    compensations = [row.split()[:4] for row in shown.out.splitlines() if row.startswith("compensate")]
    assert compensations == [
        ["compensate", "2", "noop.step", "succeeded"],
        ["compensate", "1", "noop.step", "succeeded"],
    ]


def test_retry_with_wait_runs_the_failed_workflow_again(cli, web_server, world, platform_processes):
    platform_processes("worker")
    login_as(cli, web_server, world, "operator")
    # Step 2 fails its first 4 tries, counted over every run: all 4 attempts of the first
    # run fail; the retry starts the step afresh and its first attempt (try 5) succeeds.
    workflow = noop(world, steps=3, fail_at=2, fail="transient", fail_attempts=4)

    first = cli("workflow", "watch", str(workflow.pk), "--interval", "0.2")
    assert first.code == 1, first
    assert one_error_line(first) == (
        f"workflow {workflow.pk} failed at step 2 (noop.step) after 4 attempts: "
        "TransientError: noop step 2 fails on purpose (attempt 4)"
    )
    assert "step 2/3 noop.step failed after 4 attempts" in first.out

    retried = cli("workflow", "retry", str(workflow.pk), "--wait", "--interval", "0.2")
    assert retried.code == 0, retried
    lines = retried.out.splitlines()
    assert re.fullmatch(rf"Workflow {workflow.pk} is now (pending|running) \(run 2\)\.", lines[0]), retried
    for number in (1, 2, 3):  # step 1 was undone, so it ran again
        assert f"step {number}/3 noop.step succeeded in " in retried.out, retried
    assert lines[-1].startswith(f"workflow {workflow.pk} succeeded in "), retried
    assert retried.err == ""
    detail = json.loads(cli("workflow", "show", str(workflow.pk), "-o", "json").out)
    assert (detail["state"], detail["runs"], detail["failed_step"]) == ("succeeded", 2, None)

    again = cli("workflow", "retry", str(workflow.pk))
    assert again.code == 7, again
    assert one_error_line(again) == f"only a failed workflow can be retried; workflow {workflow.pk} is succeeded"


def test_cancel_refusals(cli, web_server, world):
    workflow = noop(world, steps=2)  # no worker: it stays running between steps
    login_as(cli, web_server, world, "viewer")
    refused = cli("workflow", "cancel", str(workflow.pk))
    assert refused.code == 5, refused
    assert one_error_line(refused) == "you may not change this workflow"
    assert cli("workflow", "retry", str(workflow.pk)).code == 5

    login_as(cli, web_server, world, "operator")
    cancelled = cli("workflow", "cancel", str(workflow.pk))
    assert cancelled.code == 0, cancelled
    assert cancelled.out.strip() == f"Workflow {workflow.pk} is now cancelled."
    assert state_of(workflow) == "cancelled"

    twice = cli("workflow", "cancel", str(workflow.pk))
    assert twice.code == 7, twice
    assert one_error_line(twice) == f"workflow {workflow.pk} already cancelled"
    not_failed = cli("workflow", "retry", str(workflow.pk), "-o", "json")
    assert not_failed.code == 7, not_failed
    assert "only a failed workflow can be retried" in one_error_line(not_failed)

    theirs = noop(world, tenant=world.b)
    hidden = cli("workflow", "cancel", str(theirs.pk))
    assert hidden.code == 6, hidden
    assert state_of(theirs) == "running"


def test_cancel_with_wait_stops_a_running_workflow(cli, web_server, world, platform_processes):
    platform_processes("worker")
    login_as(cli, web_server, world, "operator")
    workflow = noop(world, steps=5, sleep=0.5)
    wait_for(lambda: Step.objects.filter(workflow=workflow, state="running").exists(), 20, "a step to run")

    cancelled = cli("workflow", "cancel", str(workflow.pk), "--wait", "--interval", "0.2")
    assert cancelled.code == 0, cancelled
    lines = cancelled.out.splitlines()
    # A cancel that lands while a step runs waits for it; one that lands between two steps (a
    # 0.5 s step ends any moment) starts the compensation at once. Both are right.
    assert lines[0].startswith(
        (f"Workflow {workflow.pk} is now running, cancel requested", f"Workflow {workflow.pk} is now compensating")
    ), cancelled
    assert lines[-1] == f"workflow {workflow.pk} cancelled", cancelled
    assert state_of(workflow) == "cancelled"
    assert Step.objects.filter(workflow=workflow, state="skipped").exists()

    watched = cli("workflow", "watch", str(workflow.pk), "-o", "json")
    assert watched.code == 1, watched
    assert json.loads(watched.out)["state"] == "cancelled"
    assert one_error_line(watched) == f"workflow {workflow.pk} was cancelled"


def test_ctrl_c_stops_watching_without_cancelling(cli, web_server, world, platform_processes):
    platform_processes("worker")
    login_as(cli, web_server, world, "viewer")
    workflow = noop(world, steps=3, sleep=0.5)

    proc = subprocess.Popen(
        [cli.executable, "workflow", "watch", str(workflow.pk), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"workflow {workflow.pk} (noop in tenant tenant-a)"), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert err.startswith(f"stopped watching workflow {workflow.pk} ("), err
    assert "Traceback" not in err
    wait_for(lambda: state_of(workflow) == "succeeded", 20, "the workflow to finish on its own")


def test_authentication_and_connection_errors(cli, web_server):
    missing = cli("workflow", "ls")
    assert missing.code == 4, missing
    assert one_error_line(missing).startswith("not logged in to ")

    wrong = cli("--server", web_server, "--token", "hm_not-a-real-token", "workflow", "show", "1")
    assert wrong.code == 4, wrong
    assert one_error_line(wrong) == "invalid token"

    server = closed_server()
    for args in (("workflow", "ls"), ("workflow", "watch", "1"), ("workflow", "cancel", "1")):
        result = cli("--server", server, "--token", "hm_whatever", *args)
        assert result.code == 3, result
        assert one_error_line(result).startswith(f"cannot connect to {server}")
