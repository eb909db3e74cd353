"""The workflow engine with real Celery worker processes, real Redis and PostgreSQL.

Each test starts its own workers (and beat, for the reconciler) through the
`platform_processes` fixture: heartbeats every second, a reconciler pass every second.
"""

from __future__ import annotations

import itertools

import redis
from django.conf import settings

from hivemind.workflows import engine
from hivemind.workflows.models import Step, StepPhase, StepState, Workflow, WorkflowState
from hivemind.workflows.noop import effects_path
from tests.conftest import wait_for


def noop(tenant, **params) -> Workflow:
    return engine.workflow_create(kind="noop", tenant=tenant, params=params)


def finished(workflow: Workflow, timeout: float = 60) -> Workflow:
    def done():
        workflow.refresh_from_db()
        return workflow.is_terminal

    wait_for(done, timeout, f"workflow {workflow.pk} to finish (now {workflow.state})")
    return workflow


def step(workflow: Workflow, number: int, phase: str = StepPhase.FORWARD) -> Step:
    return Step.objects.get(workflow=workflow, phase=phase, index=number - 1)


def effects(workflow: Workflow) -> list[str]:
    path = effects_path(workflow)
    return path.read_text().splitlines() if path.exists() else []


def test_steps_run_in_order_on_their_queue_and_log_with_context(platform_processes, world):
    worker = platform_processes("worker", queues=[settings.CONTROL_QUEUE, "node.edge-1"])
    workflow = finished(noop(world.a, steps=4, node="edge-1", record=True))
    assert workflow.state == WorkflowState.SUCCEEDED, workflow.error
    steps = list(workflow.steps.order_by("index"))
    assert [s.state for s in steps] == [StepState.SUCCEEDED] * 4
    assert {s.queue for s in steps} == {"node.edge-1"}
    assert [s.output for s in steps] == [{"step": n, "attempt": 1} for n in range(1, 5)]
    assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(steps))
    assert workflow.result == {"step": 4, "attempt": 1}
    assert effects(workflow) == ["step 1", "step 2", "step 3", "step 4"]
    assert f"workflow_id={workflow.pk} step=noop.step" in worker.output()


def test_sigkill_mid_step_resumes_and_the_effect_happens_once(platform_processes, world):
    first = platform_processes("worker")
    platform_processes("beat")
    workflow = noop(world.a, steps=3, sleep=2, record=True)
    wait_for(lambda: step(workflow, 2).state == StepState.RUNNING, 30, "step 2 to run")
    wait_for(lambda: "step 2" in effects(workflow), 10, "step 2's effect")
    first.kill()  # the worker and its pool children, mid-step, message unacknowledged
    platform_processes("worker")
    workflow = finished(workflow, 90)
    assert workflow.state == WorkflowState.SUCCEEDED, workflow.error
    assert effects(workflow) == ["step 1", "step 2", "step 3"]  # step 2's effect exactly once
    second = step(workflow, 2)
    assert second.attempts == 2
    assert "stopped answering" in second.history[0]["error"]
    assert step(workflow, 1).attempts == 1 and step(workflow, 3).attempts == 1


def test_emptied_broker_loses_no_workflow_and_repeats_no_effect(platform_processes, world):
    platform_processes("worker", concurrency=2)
    platform_processes("beat")
    workflows = [noop(world.a, steps=3, sleep=0.4, record=True) for _ in range(8)]
    wait_for(
        lambda: Step.objects.filter(workflow__in=workflows, state=StepState.RUNNING).exists(), 30, "a running step"
    )
    queued = redis.Redis.from_url(settings.CELERY_BROKER_URL).llen(settings.CONTROL_QUEUE)
    assert queued > 0, "the test needs workflows still waiting in the queue"
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # the broker restarted empty
    for workflow in workflows:
        finished(workflow, 120)
        assert workflow.state == WorkflowState.SUCCEEDED, workflow.error
        assert effects(workflow) == ["step 1", "step 2", "step 3"]
    resumed = [s for w in workflows for s in w.steps.all() if s.attempts != 1]
    assert not resumed, f"steps ran twice: {resumed}"


def _span(workflow: Workflow):
    steps = list(workflow.steps.filter(phase=StepPhase.FORWARD).order_by("index"))
    return steps[0].started_at, steps[-1].finished_at


def test_conflicting_locks_never_overlap_and_others_run_in_parallel(platform_processes, world):
    platform_processes("worker", concurrency=3)
    lock = {"key": "volume:42", "mode": "exclusive"}
    first = noop(world.a, steps=2, sleep=0.6, locks=[lock])
    second = noop(world.a, steps=2, sleep=0.6, locks=[lock])
    other = noop(world.a, steps=2, sleep=0.6, locks=[{"key": "volume:43", "mode": "exclusive"}])
    readers = [noop(world.a, steps=2, sleep=0.6, locks=[{"key": "volume:44", "mode": "shared"}]) for _ in range(2)]
    second.refresh_from_db()
    assert second.state == WorkflowState.PENDING
    assert second.waiting_on == f"exclusive lock volume:42 of workflow {first.pk}"
    for workflow in [first, second, other, *readers]:
        assert finished(workflow).state == WorkflowState.SUCCEEDED, workflow.error
    (a_start, a_end), (b_start, _b_end) = _span(first), _span(second)
    assert a_end <= b_start, "two holders of volume:42 overlapped"
    c_start, c_end = _span(other)
    assert c_start < a_end and a_start < c_end, "a workflow on another volume waited needlessly"
    (r1_start, r1_end), (r2_start, r2_end) = _span(readers[0]), _span(readers[1])
    assert r1_start < r2_end and r2_start < r1_end, "two shared holders did not run together"
    assert not Workflow.objects.filter(lock_rows__isnull=False).exists(), "a finished workflow kept a lock"


def test_a_new_workflow_takes_free_locks_as_it_is_stored_and_queues_behind_held_or_awaited_ones(world, db):
    """No worker: only what workflow_create stores. A workflow whose locks are free is stored
    running with its lock rows granted, in one INSERT per table after the check for blockers; one
    that conflicts with a granted lock, or with an older workflow's waiting one, is stored pending
    with its rows not granted and says what it waits for; shared locks go together."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from hivemind.workflows.models import WorkflowLock

    def lock(key, mode="exclusive"):
        return [{"key": key, "mode": mode}]

    with CaptureQueriesContext(connection) as captured:
        first = noop(world.a, steps=3, locks=lock("volume:7"))
    statements = [q["sql"].split()[0] for q in captured.captured_queries]
    assert statements.count("INSERT") == 3 and statements.count("UPDATE") == 0, captured.captured_queries
    second = noop(world.a, steps=1, locks=lock("volume:7"))
    third = noop(world.a, steps=1, locks=lock("volume:7", "shared"))
    readers = [noop(world.a, steps=1, locks=lock("volume:8", "shared")) for _ in range(2)]
    writer = noop(world.a, steps=1, locks=lock("volume:8"))

    def granted(workflow):
        return list(WorkflowLock.objects.filter(workflow=workflow).values_list("granted", flat=True))

    assert (first.state, first.waiting_on, granted(first)) == (WorkflowState.RUNNING, "", [True])
    assert (second.state, granted(second)) == (WorkflowState.PENDING, [False])
    assert second.waiting_on == f"exclusive lock volume:7 of workflow {first.pk}"
    assert third.state == WorkflowState.PENDING  # behind the holder, not beside it
    assert third.waiting_on == f"exclusive lock volume:7 of workflow {first.pk}"
    assert [(r.state, granted(r)) for r in readers] == [(WorkflowState.RUNNING, [True])] * 2
    assert writer.state == WorkflowState.PENDING
    assert writer.waiting_on == f"shared lock volume:8 of workflow {readers[0].pk}"
    for workflow in (first, second, third, *readers, writer):
        stored = Workflow.objects.get(pk=workflow.pk)
        assert (stored.state, stored.waiting_on) == (workflow.state, workflow.waiting_on)
        assert (stored.started_at is not None) == (stored.state == WorkflowState.RUNNING)


def test_failing_step_retries_with_backoff_then_compensates_in_reverse(platform_processes, world):
    platform_processes("worker")
    workflow = finished(noop(world.a, steps=3, fail_at=2, fail="transient", record=True))
    assert workflow.state == WorkflowState.FAILED
    failed = step(workflow, 2)
    assert failed.state == StepState.FAILED and failed.attempts == 4
    errors = [entry["error"] for entry in failed.history]
    assert errors == [f"TransientError: noop step 2 fails on purpose (attempt {n})" for n in range(1, 5)]
    gaps = [
        (_t(b["started_at"]) - _t(a["finished_at"])) for a, b in zip(failed.history, failed.history[1:], strict=False)
    ]
    assert gaps[0] < gaps[2], f"no backoff between attempts: {gaps}"
    assert step(workflow, 3).state == StepState.SKIPPED
    undo = list(workflow.steps.filter(phase=StepPhase.COMPENSATE).order_by("index"))
    assert [(u.compensates.index, u.state) for u in undo] == [(1, StepState.SUCCEEDED), (0, StepState.SUCCEEDED)]
    assert effects(workflow) == ["step 1", "step 2", "undo 2", "undo 1"]
    assert step(workflow, 1).state == StepState.COMPENSATED
    assert workflow.error.startswith("step 2 (noop.step) failed: TransientError")

    response = world.client("viewer").get(f"/api/v1/workflows/{workflow.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["failed_step"] == {
        "index": 1,
        "name": "noop.step",
        "attempts": 4,
        "error": "TransientError: noop step 2 fails on purpose (attempt 4)",
    }
    assert [s["phase"] for s in body["steps"]] == ["forward"] * 3 + ["compensate"] * 2


def _t(value: str):
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def test_permanent_error_is_not_retried(platform_processes, world):
    platform_processes("worker")
    workflow = finished(noop(world.a, steps=2, fail_at=1))
    assert workflow.state == WorkflowState.FAILED
    assert step(workflow, 1).attempts == 1
    assert "RuntimeError: noop step 1 fails on purpose" in workflow.error


def test_cancel_stops_after_the_current_step_and_compensates(platform_processes, world):
    platform_processes("worker")
    workflow = noop(world.a, steps=4, sleep=1, record=True)
    wait_for(lambda: step(workflow, 2).state == StepState.RUNNING, 30, "step 2 to run")
    response = world.client("staff").post(f"/api/v1/workflows/{workflow.pk}/cancel/")
    assert response.status_code == 202, response.content
    assert response.json()["cancel_requested"] is True
    assert response.json()["state"] == WorkflowState.RUNNING
    workflow = finished(workflow)
    assert workflow.state == WorkflowState.CANCELLED
    assert [s.state for s in workflow.steps.filter(phase=StepPhase.FORWARD).order_by("index")] == [
        StepState.COMPENSATED,
        StepState.COMPENSATED,
        StepState.SKIPPED,
        StepState.SKIPPED,
    ]
    assert effects(workflow) == ["step 1", "step 2", "undo 2", "undo 1"]
    again = world.client("staff").post(f"/api/v1/workflows/{workflow.pk}/cancel/")
    assert again.status_code == 409
    assert again.json()["code"] == "workflow_finished"


def test_cancel_of_a_waiting_workflow_is_immediate_and_frees_its_place(platform_processes, world):
    platform_processes("worker")
    lock = {"key": "app:7", "mode": "exclusive"}
    holder = noop(world.a, steps=2, sleep=1, locks=[lock])
    waiter = noop(world.a, steps=1, locks=[lock])
    third = noop(world.a, steps=1, locks=[lock])
    response = world.client("staff").post(f"/api/v1/workflows/{waiter.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["state"] == WorkflowState.CANCELLED
    for workflow in (holder, third):
        assert finished(workflow).state == WorkflowState.SUCCEEDED
    assert _span(holder)[1] <= _span(third)[0]


def test_retry_runs_again_from_the_failed_step(platform_processes, world):
    platform_processes("worker")
    workflow = finished(noop(world.a, steps=3, fail_at=3, fail_attempts=1, record=True))
    assert workflow.state == WorkflowState.FAILED
    assert effects(workflow) == ["step 1", "step 2", "step 3", "undo 3", "undo 2", "undo 1"]
    not_failed = world.client("operator").post(f"/api/v1/workflows/{finished(noop(world.a, steps=1)).pk}/retry/")
    assert not_failed.status_code == 409
    assert not_failed.json()["code"] == "workflow_not_failed"
    assert world.client("viewer").post(f"/api/v1/workflows/{workflow.pk}/retry/").status_code == 403
    assert world.client("outsider").post(f"/api/v1/workflows/{workflow.pk}/retry/").status_code == 404
    response = world.client("operator").post(f"/api/v1/workflows/{workflow.pk}/retry/")
    assert response.status_code == 202, response.content
    workflow = finished(workflow)
    assert workflow.state == WorkflowState.SUCCEEDED, workflow.error
    assert workflow.runs == 2
    assert not workflow.steps.filter(phase=StepPhase.COMPENSATE).exists()
    third = step(workflow, 3)
    assert [bool(entry["error"]) for entry in third.history] == [True, False]
    assert [s.state for s in workflow.steps.order_by("index")] == [StepState.SUCCEEDED] * 3


def test_reconciler_on_beat_resumes_a_lost_message(platform_processes, world):
    """A running workflow whose next step has no message anywhere is sent again by the reconciler."""
    platform_processes("worker")
    platform_processes("beat")
    lost = finished(noop(world.a, steps=2))
    # Rewind to "step 1 done, step 2's message never reached the broker".
    Workflow.objects.filter(pk=lost.pk).update(state=WorkflowState.RUNNING, finished_at=None)
    Step.objects.filter(workflow=lost, index=1).update(state=StepState.PENDING, attempts=0, history=[])
    lost = finished(lost, 60)
    assert lost.state == WorkflowState.SUCCEEDED
    assert step(lost, 2).attempts == 1


def test_a_worker_process_checks_no_connection_before_each_task(transactional_db):
    """worker_process_init turns Django's per-request health check off for the process's
    connections, including the ones it opens later (Django reads the setting at every connect:
    set on the wrapper alone, it was back on once the connection opened)."""
    from django.db import connection

    from hivemind.celery import _no_health_check_per_task

    saved = connection.settings_dict["CONN_HEALTH_CHECKS"]
    try:
        assert saved is True  # what the web keeps
        _no_health_check_per_task()
        connection.close()
        connection.ensure_connection()  # a new connection, as a worker's first task opens
        assert connection.health_check_enabled is False
        connection.health_check_done = False  # what close_old_connections leaves between two tasks
        checked = []
        usable = connection.is_usable
        connection.is_usable = lambda: checked.append(True) or usable()
        try:
            connection.close_if_health_check_failed()  # what the next task's first cursor calls
        finally:
            del connection.is_usable
        assert checked == []
    finally:
        connection.settings_dict["CONN_HEALTH_CHECKS"] = saved
        connection.close()
