"""Driving a workflow in the test's own process, as the workers would: its steps forward, and on
a failure the failure handler and the compensation, until it ends."""

from __future__ import annotations

from collections.abc import Callable

from hivemind.workflows import engine
from hivemind.workflows.models import Step, StepPhase, StepState, Workflow, WorkflowState


def drive(workflow: Workflow, limit: int = 60, *, before: Callable[[Step], None] | None = None) -> Workflow:
    """Run the workflow's steps here until it ends; `before(step)` runs before each step (to
    drive a workflow the step waits for, say)."""
    for _ in range(limit):
        workflow.refresh_from_db()
        if workflow.is_terminal:
            return workflow
        phase = StepPhase.FORWARD if workflow.state == WorkflowState.RUNNING else StepPhase.COMPENSATE
        step = workflow.steps.filter(phase=phase, state=StepState.PENDING).order_by("index").first()
        if step is None:
            engine.finalize(workflow.pk)
            continue
        if before is not None:
            before(step)
        try:
            engine.execute_step(step.pk, hostname="test@here")
        except engine.StepFailed:
            engine.handle_failure(workflow.pk)
    raise AssertionError(f"workflow {workflow.pk} did not end within {limit} steps: {workflow.state}")
