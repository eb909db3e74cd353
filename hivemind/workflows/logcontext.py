"""The log context of a running step (no model imports: logging is configured before apps load)."""

from __future__ import annotations

import contextvars
import logging

# (workflow id, step name) of the step running in this thread, if any.
current_step: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar("current_step", default=None)


class StepLogFilter(logging.Filter):
    """Adds `workflow_context` (" workflow_id=12 step=noop.step", or "") to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = current_step.get()
        record.workflow_id = current[0] if current else None
        record.step = current[1] if current else None
        record.workflow_context = f" workflow_id={current[0]} step={current[1]}" if current else ""
        return True
