"""Reads of workflows for the API, the admin and the dashboard."""

from __future__ import annotations

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from hivemind.workflows.models import Step, StepPhase, StepState, Workflow


def workflows_with_progress(queryset: QuerySet[Workflow]) -> QuerySet[Workflow]:
    """Adds `steps_done` and `current_step` (the first forward step not yet succeeded)."""
    current = Step.objects.filter(workflow=OuterRef("pk"), phase=StepPhase.FORWARD).exclude(state=StepState.SUCCEEDED)
    return (
        queryset.select_related("tenant", "created_by")
        .annotate(
            steps_done=Count("steps", filter=Q(steps__phase=StepPhase.FORWARD, steps__state=StepState.SUCCEEDED)),
            current_step=Subquery(current.order_by("index").values("name")[:1]),
        )
        .order_by("-id")
    )  # an aggregate drops Meta.ordering: newest first, explicitly


def workflow_steps(workflow: Workflow) -> list[Step]:
    """Forward steps in order, then compensation steps in the order they run."""
    return list(workflow.steps.order_by("-phase", "index"))


def failed_step(workflow: Workflow) -> Step | None:
    return workflow.steps.filter(phase=StepPhase.FORWARD, state=StepState.FAILED).order_by("index").first()
