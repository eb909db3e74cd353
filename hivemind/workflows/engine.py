"""The workflow engine: every change of a Workflow or Step row happens here.

- `workflow_create` validates, plans and stores a workflow, then `start`s it after commit.
- `start` takes the workflow's locks (or leaves it pending, saying what it waits for) and
  sends the chain of its steps: one immutable `run_step` signature per step, routed to
  that step's queue, with `link_error` to the failure handler.
- `execute_step` is what `run_step` does: claim the row, run the function, record the
  output; retry transient errors with backoff; on a permanent error mark the step failed
  and raise, so the failure handler (`handle_failure`) compensates in reverse order.
- `reconcile` (on beat) resumes what a dead worker or a lost message left behind.

Every transition is a conditional UPDATE (`... WHERE state = <expected>`), so a duplicated
message, a second reconciler or a late worker can never move a row twice.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import secrets
import time
from collections import Counter
from contextlib import nullcontext
from datetime import timedelta

from celery import chain
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from hivemind.core.errors import Conflict
from hivemind.core.logs import log_context, note_tenant
from hivemind.core.tracing import traceparent_of, tracer, workflow_context
from hivemind.workflows import hotpath, registry
from hivemind.workflows.context import StepContext
from hivemind.workflows.heartbeat import heartbeat
from hivemind.workflows.metrics import STEP_ATTEMPTS, STEP_DURATION, WORKFLOWS
from hivemind.workflows.models import (
    TERMINAL_STATES,
    WORKFLOW_TRANSITIONS,
    LockMode,
    Step,
    StepPhase,
    StepState,
    Workflow,
    WorkflowLock,
    WorkflowState,
)

log = logging.getLogger(__name__)

MAX_STEPS = 500


class StepFailed(Exception):
    """A step failed for good; raised out of run_step so Celery calls the failure handler."""


class Superseded(Exception):
    """This message has nothing to do: the step already ran, runs elsewhere, or the workflow
    moved on (finished, cancelled). run_step turns it into celery's Ignore, ending the chain."""


# --- helpers ---------------------------------------------------------------------------------


def _now():
    return timezone.now()


def _lost_grace() -> timedelta:
    """How long a step may go without a heartbeat (or a message) before it counts as lost."""
    return timedelta(seconds=3 * settings.CONFIG.step_heartbeat + 2)


def _transition(workflow: Workflow, to: str, *, expected: str | None = None, where=None, **fields) -> bool:
    """Move `workflow` from its (expected) state to `to` if the row is still in that state
    (and matches `where`): the one place a workflow changes state."""
    source = expected or workflow.state
    if to not in WORKFLOW_TRANSITIONS[source]:
        raise ValueError(f"a workflow cannot go from {source} to {to}")
    rows = Workflow.objects.filter(pk=workflow.pk, state=source)
    if where is not None:
        rows = rows.filter(where)
    changed = rows.update(state=to, **fields)
    if changed:
        workflow.state = to
        for name, value in fields.items():
            setattr(workflow, name, value)
        WORKFLOWS.labels(workflow.kind, to).inc()
    return bool(changed)


def _attempt_record(step: Step, *, finished, error: str = "") -> list:
    return [
        *step.history,
        {
            "run": step.workflow.runs,
            "attempt": step.attempts,
            "started_at": step.started_at.isoformat() if step.started_at else None,
            "finished_at": finished.isoformat(),
            "worker": step.worker,
            "error": error,
        },
    ]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def backoff_delay(definition: registry.StepDefinition, attempt: int) -> float:
    """Exponential backoff with jitter: about backoff * 2^(attempt-1), capped, times 0.5-1.0."""
    ceiling = min(definition.backoff_max, definition.backoff * 2 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography


# --- creating and starting -------------------------------------------------------------------


def _clean_locks(locks) -> list[dict]:
    cleaned: dict[str, str] = {}
    for lock in locks:
        key, mode = (lock.key, lock.mode) if isinstance(lock, registry.Lock) else (lock["key"], lock["mode"])
        if mode not in LockMode.values:
            raise ValidationError({"locks": f"lock mode must be exclusive or shared, got {mode!r}"})
        if not key or len(key) > 200:
            raise ValidationError({"locks": "a lock key is 1 to 200 characters, e.g. volume:42"})
        # The same key twice: exclusive wins.
        cleaned[key] = LockMode.EXCLUSIVE if LockMode.EXCLUSIVE in (mode, cleaned.get(key)) else mode
    return [{"key": key, "mode": mode} for key, mode in sorted(cleaned.items())]


def workflow_create(*, kind: str, tenant, params: dict | None = None, actor=None) -> Workflow:
    """Validate the parameters, store the workflow with its planned steps and start it after commit."""
    definition = registry.get_kind(kind)
    params = definition.clean(dict(params or {}))
    plan = definition.plan(params)
    if not plan.steps or len(plan.steps) > MAX_STEPS:
        raise ValidationError({"params": f"a workflow has 1 to {MAX_STEPS} steps, this plan has {len(plan.steps)}"})
    for planned in plan.steps:
        registry.get_step(planned.name)  # every step must be known before anything is stored
    locks = _clean_locks(plan.locks)
    note_tenant(tenant)  # the request's (or step's) log lines and span name the tenant
    # The workflow's own span (a child of the API request's, when there is one): every step's
    # span is its child, so the whole workflow is one trace whichever process runs what.
    with tracer().start_as_current_span(
        f"workflow {kind}",
        attributes={
            "hivemind.tenant_id": tenant.pk,
            "hivemind.tenant": tenant.slug,
            "hivemind.workflow_kind": kind,
            "hivemind.subject": plan.subject,
        },
    ) as span:
        context = span.get_span_context()
        if context.is_valid:  # traced (a trace left out by sampling too: its steps follow that choice)
            trace_id, traceparent = f"{context.trace_id:032x}", traceparent_of(context)
        else:  # tracing off: an id of its own still ties the workflow's log lines together
            trace_id, traceparent = secrets.token_hex(16), ""
        workflow = _store(kind, tenant, params, plan, locks, actor, trace_id, traceparent)
        span.set_attribute("hivemind.workflow_id", workflow.pk)
        facts = {"tenant": tenant.slug, "tenant_id": tenant.pk, "workflow_id": workflow.pk, "workflow_kind": kind}
        with log_context(**facts, trace_id=trace_id):
            log.info("workflow %s (%s) created: %s, %d step(s)", workflow.pk, kind, workflow.state, len(plan.steps))
    return workflow


def _store(kind, tenant, params, plan, locks, actor, trace_id: str, traceparent: str) -> Workflow:
    """Store the workflow, its steps and its locks, running at once when nothing holds or waits
    for a lock it needs: one INSERT each, and the check for blockers before them (every lock
    row already there belongs to an older workflow, so any that conflicts is ahead of this one)."""
    from tenants.services import tenant_require_active

    with transaction.atomic():
        tenant_require_active(tenant)
        now = _now()
        blocker = _lock_blocker(locks)
        at_once = blocker is None
        workflow = Workflow.objects.create(
            tenant=tenant,
            kind=kind,
            subject=plan.subject,
            params=params,
            locks=locks,
            step_count=len(plan.steps),
            created_by=actor if actor is not None and actor.pk else None,
            trace_id=trace_id,
            traceparent=traceparent,
            state=WorkflowState.RUNNING if at_once else WorkflowState.PENDING,
            started_at=now if at_once else None,
            dispatched_at=now if at_once else None,
            waiting_on="" if at_once else _waiting_on(blocker),
        )
        steps = Step.objects.bulk_create(
            Step(
                workflow=workflow,
                index=index,
                name=planned.name,
                queue=planned.queue or settings.CONTROL_QUEUE,
                params=planned.params,
                max_attempts=registry.get_step(planned.name).max_attempts,
                timeout=registry.get_step(planned.name).soft_time_limit,
                trace_id=trace_id,
            )
            for index, planned in enumerate(plan.steps)
        )
        _insert_locks(workflow, granted=at_once)
        WORKFLOWS.labels(kind, WorkflowState.PENDING).inc()
        if at_once:
            WORKFLOWS.labels(kind, WorkflowState.RUNNING).inc()
            _dispatch(workflow, StepPhase.FORWARD, steps=steps, stamp=False)
    return workflow


def _insert_locks(workflow: Workflow, *, granted: bool = False) -> None:
    WorkflowLock.objects.bulk_create(
        WorkflowLock(workflow=workflow, key=lock["key"], mode=lock["mode"], granted=granted) for lock in workflow.locks
    )


def _lock_blocker(locks: list[dict], workflow_id: int | None = None) -> WorkflowLock | None:
    """The lock row that keeps a workflow needing `locks` waiting, or None when it may take them
    all. `workflow_id`: the workflow's own, when it is stored already (None: a new one, younger
    than every workflow holding rows).

    A conflicting lock blocks when it is granted, or when an older workflow waits for it:
    first come, first served, so no waiter starves and no two wait on each other.
    """
    mine = {lock["key"]: lock["mode"] for lock in locks}
    if not mine:
        return None
    others = WorkflowLock.objects.select_for_update().filter(key__in=list(mine)).order_by("pk")
    if workflow_id is not None:
        others = others.exclude(workflow_id=workflow_id)
    for other in others:
        if LockMode.EXCLUSIVE not in (mine[other.key], other.mode):
            continue
        if other.granted or workflow_id is None or other.workflow_id < workflow_id:
            return other
    return None


def _waiting_on(blocker: WorkflowLock) -> str:
    return f"{blocker.mode} lock {blocker.key} of workflow {blocker.workflow_id}"


def start(workflow_id: int) -> bool:
    """Start a pending workflow when its locks are free; True when it was started now."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().filter(pk=workflow_id).first()
        if workflow is None or workflow.state != WorkflowState.PENDING:
            return False
        return _try_start(workflow)


def _try_start(workflow: Workflow) -> bool:
    """Take the locks and send the first chain, or record what the workflow waits for.
    Call inside a transaction holding the workflow's row."""
    blocker = _lock_blocker(workflow.locks, workflow.pk)
    if blocker is not None:
        waiting_on = _waiting_on(blocker)
        if workflow.waiting_on != waiting_on:
            Workflow.objects.filter(pk=workflow.pk).update(waiting_on=waiting_on)
        return False
    if workflow.locks:
        WorkflowLock.objects.filter(workflow=workflow).update(granted=True)
    now = _now()
    _transition(
        workflow, WorkflowState.RUNNING, started_at=workflow.started_at or now, waiting_on="", dispatched_at=now
    )
    _dispatch(workflow, StepPhase.FORWARD, stamp=False)
    return True


def _dispatch(workflow: Workflow, phase: str, *, steps: list[Step] | None = None, stamp: bool = True) -> None:
    """Send the chain of the phase's pending steps (after commit). Call inside a transaction."""
    if steps is None:
        steps = list(workflow.steps.filter(phase=phase, state=StepState.PENDING).order_by("index"))
    if stamp:
        Workflow.objects.filter(pk=workflow.pk).update(dispatched_at=_now())
    if not steps:
        return
    signatures = [(step.pk, step.queue, step.timeout) for step in steps]
    workflow_id, traceparent = workflow.pk, workflow.traceparent
    transaction.on_commit(lambda: _send_chain(workflow_id, signatures, traceparent))


def hard_time_limit(soft: int) -> int:
    """When a step asked to stop after `soft` seconds is killed: HIVEMIND_STEP_TIME_LIMIT for
    steps with the default limit, else a tenth later (at least 30 s)."""
    if soft == settings.CONFIG.step_soft_time_limit:
        return settings.CONFIG.step_time_limit
    return soft + max(30, soft // 10)


def _send_chain(workflow_id: int, signatures, traceparent: str = "") -> None:
    from hivemind.workflows.tasks import on_step_failed, run_step

    # Limits travel in each message (from the Step row), so they do not depend on which
    # process sends or forwards the chain.
    tasks = [
        run_step.si(step_id).set(queue=queue, soft_time_limit=timeout, time_limit=hard_time_limit(timeout))
        for step_id, queue, timeout in signatures
    ]
    canvas = chain(*tasks) if len(tasks) > 1 else tasks[0]
    # Sent in the workflow's trace, whoever sends it (the request, a step, the reconciler): the
    # Celery instrumentation puts that context in the message's headers, and the chain's later
    # messages, sent by the worker that ran the step before, carry it on.
    parent = workflow_context(traceparent)
    token = otel_context.attach(parent) if parent is not None else None
    try:
        canvas.apply_async(link_error=on_step_failed.si(workflow_id).set(queue=settings.CONTROL_QUEUE))
    finally:
        if token is not None:
            otel_context.detach(token)


# --- running a step --------------------------------------------------------------------------


def _worker_identity(hostname: str) -> str:
    return f"{hostname} pid {os.getpid()}"


def _attempt_is_dead(step: Step, worker: str) -> bool:
    """True when the attempt recorded on a running step can no longer finish: its heartbeat
    stopped, or it ran on this very worker host in a process that no longer exists (a pool
    child killed mid-step; Celery then hands the message back at once)."""
    if (step.heartbeat_at or step.started_at or _now()) < _now() - _lost_grace():
        return True
    host, _, pid = step.worker.partition(" pid ")
    if not pid.isdigit() or host != worker.partition(" pid ")[0]:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid) == os.getpid()  # our own pid: the earlier attempt was this process's, now gone


def _claim(step: Step, worker: str) -> int:
    """Mark the step running for a new attempt; the attempt number, or 0 when someone else has it."""
    now = _now()
    fields = {
        "state": StepState.RUNNING,
        "attempts": step.attempts + 1,
        "worker": worker,
        "started_at": now,
        "finished_at": None,
        "heartbeat_at": now,
        "retry_at": None,
        "deadline": now + timedelta(seconds=step.timeout) + _lost_grace(),
    }
    if step.state == StepState.RUNNING:  # taking over a dead attempt
        fields["history"] = _attempt_record(step, finished=now, error=f"lost: {step.worker} stopped answering")
        fields["error"] = f"attempt {step.attempts} lost: {step.worker} stopped answering"
    claimed = Step.objects.filter(pk=step.pk, state=step.state, attempts=step.attempts).update(**fields)
    if not claimed:
        return 0
    if step.state == StepState.RUNNING:
        STEP_ATTEMPTS.labels(step.workflow.kind, step.name, "lost").inc()
    for name, value in fields.items():
        setattr(step, name, value)
    return step.attempts


def _parent_context(workflow: Workflow):
    """Every step's span is a child of the workflow's span (its traceparent is on the row).
    A workflow stored without one (made before tracing kept it) still joins its trace id."""
    stored = workflow_context(workflow.traceparent)
    if stored is not None:
        return stored
    try:
        trace_id = int(workflow.trace_id, 16)
    except ValueError:
        return None
    if not trace_id:
        return None
    parent = SpanContext(
        trace_id=trace_id, span_id=random.getrandbits(64) or 1, is_remote=True, trace_flags=TraceFlags(1)
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _claim_closer(step_id: int, worker: str) -> tuple[Step, Workflow, int]:
    """The general claim: any database, and the cases the hot path leaves (a takeover of a
    dead attempt, a cancelled workflow, a duplicate message)."""
    step = Step.objects.select_related("workflow").filter(pk=step_id).first()
    if step is None:
        raise Superseded(f"step {step_id} no longer exists")
    workflow = step.workflow
    forward = step.phase == StepPhase.FORWARD
    expected = WorkflowState.RUNNING if forward else WorkflowState.COMPENSATING
    if workflow.state != expected:
        raise Superseded(f"workflow {workflow.pk} is {workflow.state}")
    if step.state == StepState.RUNNING and not _attempt_is_dead(step, worker):
        raise Superseded(f"step {step_id} is running on {step.worker}")
    if step.state not in (StepState.PENDING, StepState.RUNNING):
        raise Superseded(f"step {step_id} is {step.state}")
    if forward and workflow.cancel_requested_at is not None:
        begin_compensation(workflow.pk, cancelled=True)
        raise Superseded(f"workflow {workflow.pk} was cancelled")
    attempt = _claim(step, worker)
    if not attempt:
        raise Superseded(f"step {step_id} was claimed by another worker")
    return step, workflow, attempt


def execute_step(step_id: int, *, hostname: str = "", retry=None) -> None:
    """Run one step for the `run_step` task. `retry(countdown)` re-sends the message (and raises)."""
    worker = _worker_identity(hostname)
    claimed = None
    if hotpath.enabled():
        claimed = hotpath.claim(step_id, worker=worker, now=_now(), grace_seconds=_lost_grace().total_seconds())
    if claimed is not None:
        step, workflow = claimed
        attempt = step.attempts
    else:
        step, workflow, attempt = _claim_closer(step_id, worker)
    forward = step.phase == StepPhase.FORWARD
    definition = registry.get_step(step.name)

    ctx = StepContext(workflow, step, attempt)
    function = definition.func if forward else definition.compensator
    facts = {
        "tenant": tenant_slug(workflow.tenant_id),
        "tenant_id": workflow.tenant_id,
        "workflow_id": workflow.pk,
        "workflow_kind": workflow.kind,
        "step": step.name,
    }
    with log_context(**facts, trace_id=workflow.trace_id or None):
        _run_claimed(ctx, function, definition, facts, retry)


def _run_claimed(ctx: StepContext, function, definition, facts: dict, retry) -> None:
    step, workflow, attempt = ctx.step, ctx.workflow, ctx.attempt
    forward = step.phase == StepPhase.FORWARD
    heartbeat.watch(step.pk, attempt)
    started = time.perf_counter()
    error: BaseException | None = None
    output = None
    span_id = ""
    try:
        with tracer().start_as_current_span(
            f"workflow step {step.name}",
            context=_parent_context(workflow),
            attributes={
                "hivemind.tenant_id": facts["tenant_id"],
                "hivemind.tenant": facts["tenant"],
                "hivemind.workflow_id": workflow.pk,
                "hivemind.workflow_kind": workflow.kind,
                "hivemind.step": step.name,
                "hivemind.step_index": step.index,
                "hivemind.step_phase": step.phase,
                "hivemind.attempt": attempt,
                "hivemind.queue": step.queue,
            },
        ) as span:
            if span.is_recording():
                span_id = f"{span.get_span_context().span_id:016x}"
            log.debug("%s step %d/%d, attempt %d", step.phase, step.index + 1, _phase_length(workflow, step), attempt)
            try:
                output = function(ctx) if function is not None else None
                json.dumps(output)
            except SoftTimeLimitExceeded:
                error = TimeoutError(f"timed out after {step.timeout} s")
            except (TypeError, ValueError) as exc:
                error = exc if output is None else TypeError(f"the step's output is not JSON: {exc}")
            except Exception as exc:
                error = exc
            if error is not None:
                span.record_exception(error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, _describe(error)))
            else:  # inside the span: the line names the step's span
                log.info(
                    "%s step %d/%d succeeded on attempt %d in %.3f s",
                    step.phase,
                    step.index + 1,
                    _phase_length(workflow, step),
                    attempt,
                    time.perf_counter() - started,
                )
    finally:
        heartbeat.clear()
        STEP_DURATION.labels(workflow.kind, step.name).observe(time.perf_counter() - started)

    if error is None:
        _step_succeeded(workflow, step, output, added=ctx.added_steps, span_id=span_id)
        return
    transient = isinstance(error, definition.transient) and not isinstance(error, TimeoutError | SoftTimeLimitExceeded)
    message = _describe(error)
    if transient and attempt < step.max_attempts and retry is not None:
        delay = backoff_delay(definition, attempt)
        log.warning("attempt %d failed (%s); retrying in %.1f s", attempt, message, delay)
        _step_retry(workflow, step, message, delay, span_id=span_id)
        retry(delay)
        return
    log.error("step %s failed on attempt %d: %s", step.name, attempt, message)
    _step_failed(workflow, step, message, span_id=span_id)
    if forward:
        raise StepFailed(f"step {step.index + 1} ({step.name}) failed: {message}")
    _continue_compensation(workflow)


@functools.lru_cache(maxsize=4096)
def tenant_slug(tenant_id: int) -> str | None:
    """A tenant's slug for log lines and spans, read once per process (slugs never change)."""
    from tenants.models import Tenant

    return Tenant.objects.filter(pk=tenant_id).values_list("slug", flat=True).first()


def _phase_length(workflow: Workflow, step: Step) -> int:
    return workflow.step_count if step.phase == StepPhase.FORWARD else workflow.compensation_count


def _step_succeeded(workflow: Workflow, step: Step, output, *, added=(), span_id: str = "") -> None:
    now = _now()
    history = _attempt_record(step, finished=now)
    # A step that planned further steps records its success and those steps together.
    with transaction.atomic() if added else nullcontext():
        if hotpath.enabled():
            done = hotpath.succeed(
                step.pk, attempt=step.attempts, output=output, history=history, now=now, span_id=span_id
            )
        else:
            done = Step.objects.filter(pk=step.pk, state=StepState.RUNNING, attempts=step.attempts).update(
                state=StepState.SUCCEEDED,
                output=output,
                error="",
                finished_at=now,
                heartbeat_at=None,
                history=history,
                span_id=span_id,
            )
        if not done:
            raise Superseded(f"attempt {step.attempts} of step {step.pk} was taken over while it ran")
        if added:
            _append_steps(workflow, step, added)
    STEP_ATTEMPTS.labels(workflow.kind, step.name, "succeeded").inc()
    if step.phase == StepPhase.FORWARD:
        # A cancellation is noticed by the next step's message before it claims its row;
        # after the last step there is nothing left to cancel.
        if not added and step.index + 1 >= workflow.step_count:
            complete(workflow, result=output)
    else:
        # A failed step stays "failed" (its compensation row shows it was cleaned up).
        Step.objects.filter(pk=step.compensates_id, state=StepState.SUCCEEDED).update(state=StepState.COMPENSATED)
        if step.index + 1 >= workflow.compensation_count:
            finalize(workflow.pk)


def _append_steps(workflow: Workflow, step: Step, added) -> None:
    """The last step planned what comes next (e.g. one step per node it placed replicas on):
    store the new steps after it and send them as the next chain."""
    if step.index + 1 != workflow.step_count:
        raise ValueError("only the last step of a workflow may add steps")
    with transaction.atomic():
        locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if locked.state != WorkflowState.RUNNING or locked.step_count != workflow.step_count:
            return  # cancelled meanwhile, or a duplicate that already appended
        new = Step.objects.bulk_create(
            Step(
                workflow=locked,
                index=locked.step_count + offset,
                name=planned.name,
                queue=planned.queue or settings.CONTROL_QUEUE,
                params=planned.params,
                max_attempts=registry.get_step(planned.name).max_attempts,
                timeout=registry.get_step(planned.name).soft_time_limit,
                trace_id=locked.trace_id,
            )
            for offset, planned in enumerate(added)
        )
        Workflow.objects.filter(pk=locked.pk).update(step_count=locked.step_count + len(new), dispatched_at=_now())
        _dispatch(locked, StepPhase.FORWARD, steps=new, stamp=False)


def _step_retry(workflow: Workflow, step: Step, message: str, delay: float, *, span_id: str = "") -> None:
    now = _now()
    updated = Step.objects.filter(pk=step.pk, state=StepState.RUNNING, attempts=step.attempts).update(
        span_id=span_id,
        state=StepState.PENDING,
        error=f"attempt {step.attempts} of {step.max_attempts}: {message}",
        retry_at=now + timedelta(seconds=delay),
        heartbeat_at=None,
        history=_attempt_record(step, finished=now, error=message),
    )
    if not updated:
        raise Superseded(f"attempt {step.attempts} of step {step.pk} was taken over while it ran")
    STEP_ATTEMPTS.labels(workflow.kind, step.name, "retried").inc()


def _step_failed(workflow: Workflow, step: Step, message: str, *, span_id: str = "") -> None:
    now = _now()
    updated = Step.objects.filter(pk=step.pk, state=StepState.RUNNING, attempts=step.attempts).update(
        span_id=span_id,
        state=StepState.FAILED,
        error=message,
        finished_at=now,
        heartbeat_at=None,
        history=_attempt_record(step, finished=now, error=message),
    )
    if not updated:
        raise Superseded(f"attempt {step.attempts} of step {step.pk} was taken over while it ran")
    STEP_ATTEMPTS.labels(workflow.kind, step.name, "failed").inc()


# --- finishing, failing, compensating --------------------------------------------------------


def _release_locks(workflow: Workflow) -> list[str]:
    keys = [lock["key"] for lock in workflow.locks]
    if keys:
        WorkflowLock.objects.filter(workflow=workflow).delete()
        transaction.on_commit(lambda: wake_waiters(keys))
    return keys


def wake_waiters(keys: list[str]) -> None:
    """Try to start, oldest first, the pending workflows that wait for any of these locks."""
    waiting = (
        WorkflowLock.objects.filter(key__in=keys, granted=False, workflow__state=WorkflowState.PENDING)
        .order_by("workflow_id")
        .values_list("workflow_id", flat=True)
        .distinct()
    )
    for workflow_id in list(waiting):
        start(workflow_id)


def _finished(workflow: Workflow) -> None:
    registry.get_kind(workflow.kind).on_finished(workflow)


def complete(workflow: Workflow, *, result=None) -> bool:
    """Mark a running workflow succeeded once every forward step has (one statement)."""
    unfinished = Step.objects.filter(workflow=OuterRef("pk"), phase=StepPhase.FORWARD).exclude(
        state=StepState.SUCCEEDED
    )
    with transaction.atomic() if workflow.locks else nullcontext():
        if not _transition(
            workflow,
            WorkflowState.SUCCEEDED,
            expected=WorkflowState.RUNNING,
            where=~Exists(unfinished),
            result=result,
            error="",
            finished_at=_now(),
        ):
            return False
        _release_locks(workflow)
        _finished(workflow)
    log.info("workflow %s (%s) succeeded", workflow.pk, workflow.kind)
    return True


def handle_failure(workflow_id: int) -> None:
    """The failure handler (link_error of every chain, and the reconciler's fallback).

    A running step whose message failed without the step saying so died hard (the hard time
    limit killed its process): it is marked failed first."""
    workflow = Workflow.objects.filter(pk=workflow_id).first()
    if workflow is None or workflow.state not in (WorkflowState.RUNNING, WorkflowState.COMPENSATING):
        return
    phase = StepPhase.FORWARD if workflow.state == WorkflowState.RUNNING else StepPhase.COMPENSATE
    for step in workflow.steps.filter(phase=phase, state=StepState.RUNNING):
        message = f"its process died (hard time limit {hard_time_limit(step.timeout)} s, or killed)"
        now = _now()
        Step.objects.filter(pk=step.pk, state=StepState.RUNNING, attempts=step.attempts).update(
            state=StepState.FAILED,
            error=message,
            finished_at=now,
            history=_attempt_record(step, finished=now, error=message),
        )
    if phase == StepPhase.FORWARD:
        begin_compensation(workflow_id)
    else:
        _continue_compensation(workflow)


def begin_compensation(workflow_id: int, *, cancelled: bool = False) -> bool:
    """Stop going forward and undo, in reverse order, every step that ran (or partly ran)."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow_id)
        if workflow.state != WorkflowState.RUNNING:
            return False
        forward = list(workflow.steps.filter(phase=StepPhase.FORWARD).order_by("index"))
        failed = next((step for step in forward if step.state == StepState.FAILED), None)
        if failed is None and not cancelled:
            return False  # nothing failed: a stray failure message
        error = "cancelled" if failed is None else f"step {failed.index + 1} ({failed.name}) failed: {failed.error}"
        Step.objects.filter(pk__in=[s.pk for s in forward if s.state == StepState.PENDING]).update(
            state=StepState.SKIPPED
        )
        undo = [
            step
            for step in reversed(forward)
            if step.state in (StepState.SUCCEEDED, StepState.FAILED) and registry.get_step(step.name).compensator
        ]
        Step.objects.bulk_create(
            Step(
                workflow=workflow,
                phase=StepPhase.COMPENSATE,
                index=index,
                name=step.name,
                queue=step.queue,
                params=step.params,
                compensates=step,
                max_attempts=registry.get_step(step.name).max_attempts,
                timeout=registry.get_step(step.name).soft_time_limit,
                trace_id=workflow.trace_id,
            )
            for index, step in enumerate(undo)
        )
        _transition(workflow, WorkflowState.COMPENSATING, error=error, compensation_count=len(undo))
        if undo:
            _dispatch(workflow, StepPhase.COMPENSATE)
        else:
            transaction.on_commit(lambda: finalize(workflow_id))
    log.warning("workflow %s (%s): %s; compensating %d step(s)", workflow.pk, workflow.kind, error, len(undo))
    return True


def _continue_compensation(workflow: Workflow) -> None:
    """After a compensation step failed for good: go on with the next one, or finish."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if workflow.state != WorkflowState.COMPENSATING:
            return
        steps = workflow.steps.filter(phase=StepPhase.COMPENSATE)
        if steps.filter(state=StepState.RUNNING).exists():
            return
        if steps.filter(state=StepState.PENDING).exists():
            _dispatch(workflow, StepPhase.COMPENSATE)
        else:
            transaction.on_commit(lambda: finalize(workflow.pk))


def finalize(workflow_id: int) -> bool:
    """End a compensating workflow: failed (or cancelled), locks released."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow_id)
        if workflow.state != WorkflowState.COMPENSATING:
            return False
        steps = workflow.steps.filter(phase=StepPhase.COMPENSATE)
        if steps.filter(state__in=[StepState.PENDING, StepState.RUNNING]).exists():
            return False
        error = workflow.error
        for failed in steps.filter(state=StepState.FAILED).order_by("index"):
            error += f"; compensation {failed.name} failed: {failed.error}"
        to = WorkflowState.CANCELLED if workflow.cancel_requested_at is not None else WorkflowState.FAILED
        if not _transition(workflow, to, error=error, finished_at=_now()):
            return False
        _release_locks(workflow)
        _finished(workflow)
    log.warning("workflow %s (%s) %s: %s", workflow.pk, workflow.kind, to, error)
    return True


# --- cancel and retry ------------------------------------------------------------------------


def workflow_cancel(*, workflow: Workflow, actor) -> Workflow:
    """Pending: cancelled now. Running: stops after its current step, then compensates."""
    from tenants.services import audit_record

    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if workflow.state in TERMINAL_STATES:
            raise Conflict(f"workflow {workflow.pk} already {workflow.state}", code="workflow_finished")
        if workflow.state == WorkflowState.COMPENSATING:
            raise Conflict(f"workflow {workflow.pk} is already compensating", code="workflow_compensating")
        now = _now()
        if workflow.state == WorkflowState.PENDING:
            workflow.steps.filter(state=StepState.PENDING).update(state=StepState.SKIPPED)
            _transition(workflow, WorkflowState.CANCELLED, cancel_requested_at=now, finished_at=now, error="cancelled")
            _release_locks(workflow)
            _finished(workflow)
        elif workflow.cancel_requested_at is None:
            Workflow.objects.filter(pk=workflow.pk).update(cancel_requested_at=now)
            workflow.cancel_requested_at = now
            if not workflow.steps.filter(phase=StepPhase.FORWARD, state=StepState.RUNNING).exists():
                # Between steps (or waiting for a retry): nothing will reach a step boundary soon.
                workflow_id = workflow.pk
                transaction.on_commit(lambda: begin_compensation(workflow_id, cancelled=True))
        audit_record(actor=actor, tenant=workflow.tenant, action="workflow.cancel", obj=workflow)
    return workflow


def workflow_retry(*, workflow: Workflow, actor) -> Workflow:
    """Run a failed workflow again from its failed step. Steps whose effect the compensation
    undid run again too (they are idempotent); the others keep their outputs."""
    from tenants.services import audit_record, tenant_require_active

    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if workflow.state != WorkflowState.FAILED:
            raise Conflict(
                f"only a failed workflow can be retried; workflow {workflow.pk} is {workflow.state}",
                code="workflow_not_failed",
            )
        tenant_require_active(workflow.tenant)
        workflow.steps.filter(phase=StepPhase.COMPENSATE).delete()
        workflow.steps.filter(phase=StepPhase.FORWARD).filter(
            Q(state__in=[StepState.FAILED, StepState.SKIPPED, StepState.COMPENSATED])
        ).update(state=StepState.PENDING, attempts=0, error="", retry_at=None, finished_at=None)
        _transition(
            workflow,
            WorkflowState.PENDING,
            error="",
            started_at=None,
            finished_at=None,
            compensation_count=0,
            cancel_requested_at=None,
            runs=workflow.runs + 1,
        )
        _insert_locks(workflow)
        audit_record(actor=actor, tenant=workflow.tenant, action="workflow.retry", obj=workflow)
        workflow_id = workflow.pk
        transaction.on_commit(lambda: start(workflow_id))
    return workflow


# --- the reconciler --------------------------------------------------------------------------


def _mark_lost(step: Step, now) -> bool:
    """A running step whose worker stopped answering: back to pending, or failed at the limit."""
    message = f"attempt {step.attempts} lost: {step.worker} stopped answering"
    fields = {"heartbeat_at": None, "history": _attempt_record(step, finished=now, error=message)}
    if step.attempts >= step.max_attempts:
        fields.update(state=StepState.FAILED, error=f"{message} (attempt limit {step.max_attempts})", finished_at=now)
    else:
        fields.update(state=StepState.PENDING, error=message)
    changed = Step.objects.filter(pk=step.pk, state=StepState.RUNNING, attempts=step.attempts).update(**fields)
    if changed:
        STEP_ATTEMPTS.labels(step.workflow.kind, step.name, "lost").inc()
        log.warning("workflow %s: %s", step.workflow_id, message)
    return bool(changed)


def _mark_timed_out(step: Step, now) -> bool:
    message = f"timed out: still running after {step.timeout} s"
    changed = Step.objects.filter(pk=step.pk, state=StepState.RUNNING, attempts=step.attempts).update(
        state=StepState.FAILED,
        error=message,
        finished_at=now,
        heartbeat_at=None,
        history=_attempt_record(step, finished=now, error=message),
    )
    if changed:
        STEP_ATTEMPTS.labels(step.workflow.kind, step.name, "failed").inc()
        log.warning("workflow %s: step %s %s", step.workflow_id, step.name, message)
    return bool(changed)


def _fail_unreachable(workflow: Workflow, step: Step, reason: str, now) -> None:
    """A step waits on a queue nothing will consume (its node is down): fail it, so the
    workflow compensates (or its compensation goes on) instead of waiting for ever."""
    message = f"cannot run: {reason}"
    changed = Step.objects.filter(pk=step.pk, state=StepState.PENDING, attempts=step.attempts).update(
        state=StepState.FAILED, error=message, finished_at=now
    )
    if not changed:
        return
    log.warning("workflow %s: step %s %s", workflow.pk, step.name, message)
    if step.phase == StepPhase.FORWARD:
        handle_failure(workflow.pk)
    else:
        _continue_compensation(workflow)


def _resume(workflow: Workflow, phase: str) -> None:
    with transaction.atomic():
        locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
        expected = WorkflowState.RUNNING if phase == StepPhase.FORWARD else WorkflowState.COMPENSATING
        if locked.state == expected:
            _dispatch(locked, phase)


def reconcile(*, wakeups=None) -> Counter:
    """Resume what a dead worker or a lost message left behind; time out overdue steps.

    `wakeups` gives (queued, unacknowledged) step ids held by the broker (default: read Redis).
    """
    from hivemind.workflows import broker

    now = _now()
    stale = now - _lost_grace()
    report: Counter = Counter()
    resumed: set[int] = set()

    active = Q(phase=StepPhase.FORWARD, workflow__state=WorkflowState.RUNNING) | Q(
        phase=StepPhase.COMPENSATE, workflow__state=WorkflowState.COMPENSATING
    )
    for step in Step.objects.filter(active, state=StepState.RUNNING).select_related("workflow"):
        if step.deadline is not None and step.deadline < now:
            if _mark_timed_out(step, now):
                report["timed_out"] += 1
                handle_failure(step.workflow_id)
        elif (step.heartbeat_at or step.started_at or now) < stale and _mark_lost(step, now):
            # Its message died with the worker (or sits unacknowledged until the broker's
            # visibility timeout): send the step again now.
            report["lost_attempts"] += 1
            resumed.add(step.workflow_id)
            if step.attempts >= step.max_attempts:
                handle_failure(step.workflow_id)
            else:
                _resume(step.workflow, step.phase)

    queued = unacked = live = None
    for workflow in Workflow.objects.filter(state__in=[WorkflowState.RUNNING, WorkflowState.COMPENSATING]):
        if workflow.pk in resumed:
            continue
        forward = workflow.state == WorkflowState.RUNNING
        phase = StepPhase.FORWARD if forward else StepPhase.COMPENSATE
        steps = list(workflow.steps.filter(phase=phase).order_by("index"))
        if any(step.state == StepState.RUNNING for step in steps):
            continue
        if forward and any(step.state == StepState.FAILED for step in steps):
            report["failures_handled"] += 1
            handle_failure(workflow.pk)
            continue
        if forward and workflow.cancel_requested_at is not None:
            report["cancellations"] += 1
            begin_compensation(workflow.pk, cancelled=True)
            continue
        following = next((step for step in steps if step.state == StepState.PENDING), None)
        if following is None:
            report["finished"] += 1
            if forward:
                complete(workflow, result=steps[-1].output if steps else None)
            else:
                finalize(workflow.pk)
            continue
        before = steps[following.index - 1] if following.index else None
        moments = [t for t in (workflow.dispatched_at, before.finished_at if before else None, following.retry_at) if t]
        if (max(moments) if moments else now) > stale:
            continue
        down = registry.queue_down(following.queue)
        if down:
            report["unreachable"] += 1
            _fail_unreachable(workflow, following, down, now)
            continue
        if queued is None:
            queued, unacked = wakeups if wakeups is not None else broker.step_wakeups()
        if following.pk in queued:
            continue
        if following.pk in unacked:
            if live is None:
                live = broker.held_by_live_workers()
            if following.pk in live:
                continue
        report["resumed"] += 1
        log.warning("workflow %s: the message for step %s was lost; sending it again", workflow.pk, following.name)
        _resume(workflow, phase)

    for workflow_id in Workflow.objects.filter(state=WorkflowState.PENDING).order_by("pk").values_list("pk", flat=True):
        if start(workflow_id):
            report["started"] += 1
    if report:
        log.info("reconciler: %s", ", ".join(f"{key} {value}" for key, value in sorted(report.items())))
    return report
