"""What a running step sees."""

from __future__ import annotations

import logging
from typing import Any

from hivemind.workflows.models import Step, StepPhase, Workflow


class StepContext:
    """Handed to a step function: the workflow, its parameters, earlier outputs, a logger."""

    def __init__(self, workflow: Workflow, step: Step, attempt: int):
        self.workflow = workflow
        self.step = step
        self.attempt = attempt
        self.params: dict = workflow.params
        self.log = logging.getLogger(f"hivemind.step.{step.name}")
        self._outputs: dict[int, Any] | None = None
        self.added_steps: list = []

    def add_steps(self, steps) -> None:
        """From the last planned step: run these `PlannedStep`s next (e.g. one per node the
        step placed work on). They are stored and sent when this step succeeds."""
        for planned in steps:
            from hivemind.workflows.registry import get_step

            get_step(planned.name)  # fail now, in this step, if a name is unknown
            self.added_steps.append(planned)

    @property
    def workflow_id(self) -> int:
        return self.workflow.pk

    @property
    def tenant_id(self) -> int:
        return self.workflow.tenant_id

    @property
    def labels(self) -> dict[str, str]:
        """Labels to put on anything the step makes, so a later attempt can find and adopt it."""
        return {
            "io.hivemind.workflow": str(self.workflow.pk),
            "io.hivemind.step": self.step.name,
            "io.hivemind.tenant": str(self.workflow.tenant_id),
        }

    @property
    def outputs(self) -> dict[int, Any]:
        """Outputs of the forward steps that succeeded so far, by index."""
        if self._outputs is None:
            rows = Step.objects.filter(workflow=self.workflow, phase=StepPhase.FORWARD, state="succeeded")
            self._outputs = dict(rows.values_list("index", "output"))
        return self._outputs

    def output_of(self, name_or_index: str | int) -> Any:
        if isinstance(name_or_index, int):
            return self.outputs.get(name_or_index)
        row = (
            Step.objects.filter(workflow=self.workflow, phase=StepPhase.FORWARD, name=name_or_index)
            .order_by("-index")
            .values_list("output", flat=True)
            .first()
        )
        return row

    @property
    def output(self) -> Any:
        """In a compensation step: what the forward step it undoes returned (None if it failed)."""
        if self.step.compensates_id is None:
            return None
        return Step.objects.filter(pk=self.step.compensates_id).values_list("output", flat=True).first()
