"""Workflows: the database rows that are the truth about every long operation.

A Workflow is an ordered list of Steps. Celery only carries wake-ups (one `run_step`
message per step, chained); whatever a message says, a step runs only when its row says
it may, and its output is stored on the row. The allowed state changes are in
`WORKFLOW_TRANSITIONS` and happen only through `hivemind.workflows.engine`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from hivemind.core.models import TenantOwned


class WorkflowState(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({WorkflowState.SUCCEEDED, WorkflowState.FAILED, WorkflowState.CANCELLED})
ACTIVE_STATES = frozenset({WorkflowState.PENDING, WorkflowState.RUNNING, WorkflowState.COMPENSATING})

# from -> the states it may move to. Failure and cancellation always pass through
# `compensating` (even with nothing to undo), so there is one way to finish.
WORKFLOW_TRANSITIONS: dict[str, frozenset[str]] = {
    WorkflowState.PENDING: frozenset({WorkflowState.RUNNING, WorkflowState.CANCELLED}),
    WorkflowState.RUNNING: frozenset({WorkflowState.SUCCEEDED, WorkflowState.COMPENSATING}),
    WorkflowState.COMPENSATING: frozenset({WorkflowState.FAILED, WorkflowState.CANCELLED}),
    WorkflowState.FAILED: frozenset({WorkflowState.PENDING}),  # retry
    WorkflowState.SUCCEEDED: frozenset(),
    WorkflowState.CANCELLED: frozenset(),
}


class StepState(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # never ran: the workflow failed or was cancelled first
    COMPENSATED = "compensated"  # ran, then undone by its compensation step


class StepPhase(models.TextChoices):
    FORWARD = "forward"
    COMPENSATE = "compensate"


class LockMode(models.TextChoices):
    EXCLUSIVE = "exclusive"
    SHARED = "shared"


class Workflow(TenantOwned):
    kind = models.CharField(max_length=64, db_index=True)
    subject = models.CharField(
        max_length=200, blank=True, db_index=True, help_text="what the workflow works on, e.g. app:12"
    )
    state = models.CharField(max_length=16, choices=WorkflowState.choices, default=WorkflowState.PENDING)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Declared resource locks, as [{"key": "volume:42", "mode": "exclusive"}]; the held or
    # waiting rows are WorkflowLock and exist only while the workflow is active.
    locks = models.JSONField(default=list, blank=True)
    waiting_on = models.CharField(max_length=300, blank=True, help_text="why a pending workflow has not started")
    step_count = models.PositiveIntegerField(default=0)
    compensation_count = models.PositiveIntegerField(default=0)
    runs = models.PositiveIntegerField(default=1, help_text="1, plus one per retry")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The workflow's trace (hivemind/core/tracing.py): its id, and the W3C traceparent of the
    # span that created it, which every step's span is a child of, whoever sends the step.
    # With tracing off the id is still set (random), so log lines of one workflow share it.
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    traceparent = models.CharField(max_length=55, blank=True, help_text="the W3C traceparent steps continue")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="when the current chain was sent")

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["state", "id"]),
            models.Index(fields=["tenant", "-id"]),
        ]

    def __str__(self) -> str:
        return f"workflow {self.pk} ({self.kind}, {self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        from django.utils import timezone

        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class Step(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    phase = models.CharField(max_length=12, choices=StepPhase.choices, default=StepPhase.FORWARD)
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=100, help_text="the registered step function")
    params = models.JSONField(default=dict, blank=True, help_text="what this step works on, set by its plan")
    queue = models.CharField(max_length=100, help_text="the Celery queue of the node that runs it")
    state = models.CharField(max_length=16, choices=StepState.choices, default=StepState.PENDING)
    compensates = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="compensations"
    )
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    timeout = models.PositiveIntegerField(default=1800, help_text="seconds an attempt may run")
    # One entry per finished attempt: {"attempt", "started_at", "finished_at", "worker", "error"}.
    history = models.JSONField(default=list, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True, help_text="a running attempt past this is timed out")
    retry_at = models.DateTimeField(null=True, blank=True, help_text="when a transient failure is retried")
    trace_id = models.CharField(max_length=32, blank=True, help_text="its workflow's trace")
    span_id = models.CharField(max_length=16, blank=True, help_text="the span of its latest attempt (when traced)")

    class Meta:
        ordering = ["workflow", "phase", "index"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "phase", "index"], name="workflow_step_unique_index"),
        ]
        # No index on state: a step's state changes twice per attempt, and without one
        # PostgreSQL updates the row in place (HOT). The reconciler finds running steps
        # through their workflow's state, which is indexed.

    def __str__(self) -> str:
        return f"{self.phase} step {self.index} {self.name} of workflow {self.workflow_id} ({self.state})"

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class WorkflowLock(models.Model):
    """A lock a workflow holds (granted) or waits for; deleted when the workflow finishes."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="lock_rows")
    key = models.CharField(max_length=200)
    mode = models.CharField(max_length=10, choices=LockMode.choices, default=LockMode.EXCLUSIVE)
    granted = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workflow", "key"], name="workflow_lock_once_per_key")]
        indexes = [models.Index(fields=["key"])]

    def __str__(self) -> str:
        return f"{self.mode} lock {self.key} of workflow {self.workflow_id}{'' if self.granted else ' (waiting)'}"
