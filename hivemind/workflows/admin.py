"""Workflows in the Django admin: read-only rows, a step timeline, cancel and retry actions."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from hivemind.core.errors import Conflict
from hivemind.workflows import engine, selectors
from hivemind.workflows.models import Step, Workflow

STATE_COLOURS = {
    "pending": "#9e9e9e",
    "running": "#1e88e5",
    "succeeded": "#43a047",
    "failed": "#e53935",
    "skipped": "#bdbdbd",
    "compensated": "#fb8c00",
    "compensating": "#fb8c00",
    "cancelled": "#757575",
}


class StepInline(admin.TabularInline):
    model = Step
    fk_name = "workflow"
    extra = 0
    can_delete = False
    ordering = ["-phase", "index"]
    fields = ["phase", "index", "name", "queue", "state", "attempts", "max_attempts", "worker", "started_at",
              "finished_at", "error", "trace_id", "span_id"]  # fmt: skip
    readonly_fields = fields
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


def timeline(workflow: Workflow) -> str:
    """One bar per step, placed on the workflow's time axis, coloured by state."""
    steps = [step for step in selectors.workflow_steps(workflow) if step.started_at]
    if not steps or workflow.started_at is None:
        return "no step has started yet"
    origin = workflow.started_at
    end = max([workflow.finished_at or timezone.now(), *[s.finished_at or timezone.now() for s in steps]])
    total = max((end - origin).total_seconds(), 0.001)
    rows = []
    for step in steps:
        finished = step.finished_at or timezone.now()
        left = 100 * max((step.started_at - origin).total_seconds(), 0) / total
        width = max(100 * (finished - step.started_at).total_seconds() / total, 0.5)
        label = f"{'undo ' if step.phase == 'compensate' else ''}{step.index + 1}. {step.name}"
        rows.append(
            (
                label,
                f"{left:.2f}",
                f"{min(width, 100 - left):.2f}",
                STATE_COLOURS.get(step.state, "#9e9e9e"),
                f"{step.state}, attempt {step.attempts}, {(finished - step.started_at).total_seconds():.2f} s"
                + (f": {step.error}" if step.error else ""),
            )
        )
    bars = format_html_join(
        "",
        '<div style="display:flex;align-items:center;margin:2px 0"><span style="width:16em;flex:none">{}</span>'
        '<span style="position:relative;flex:1;height:1em;background:#f3f3f3">'
        '<span style="position:absolute;left:{}%;width:{}%;height:100%;background:{}" title="{}"></span>'
        "</span></div>",
        rows,
    )
    return format_html('<div style="min-width:40em">{}<small>0 s … {} s</small></div>', bars, f"{total:.2f}")


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "tenant", "subject", "state", "progress", "created_at", "duration_seconds"]
    list_filter = ["state", "kind", "tenant"]
    search_fields = ["=id", "subject", "kind", "=trace_id"]
    date_hierarchy = "created_at"
    inlines = [StepInline]
    actions = ["cancel_selected", "retry_selected"]
    fields = ["kind", "tenant", "subject", "state", "step_timeline", "error", "waiting_on", "params", "result",
              "locks", "runs", "cancel_requested_at", "created_by", "trace_id", "traceparent", "created_at",
              "started_at", "finished_at"]  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request):
        return selectors.workflows_with_progress(super().get_queryset(request))

    @admin.display(description="progress")
    def progress(self, workflow: Workflow) -> str:
        return f"{getattr(workflow, 'steps_done', 0)}/{workflow.step_count}"

    @admin.display(description="duration (s)")
    def duration_seconds(self, workflow: Workflow) -> str:
        return "" if workflow.duration is None else f"{workflow.duration:.2f}"

    @admin.display(description="step timeline")
    def step_timeline(self, workflow: Workflow) -> str:
        return timeline(workflow)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # history; the rows are small and the reconciler needs the truth

    def _apply(self, request, queryset, service, verb: str) -> None:
        done = 0
        for workflow in queryset:
            try:
                service(workflow=workflow, actor=request.user)
                done += 1
            except Conflict as exc:
                self.message_user(request, f"workflow {workflow.pk}: {exc.detail}", messages.WARNING)
        if done:
            self.message_user(request, f"{verb} {done} workflow(s)", messages.SUCCESS)

    @admin.action(description="Cancel selected workflows (running ones stop after their current step)")
    def cancel_selected(self, request, queryset):
        self._apply(request, queryset, engine.workflow_cancel, "cancelled")

    @admin.action(description="Retry selected failed workflows")
    def retry_selected(self, request, queryset):
        self._apply(request, queryset, engine.workflow_retry, "retried")
