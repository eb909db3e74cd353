"""The Celery tasks of the workflow engine. Thin: each one calls into engine.py."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import Ignore
from django.db import InterfaceError, OperationalError

from hivemind.workflows import engine


@shared_task(
    name="workflows.run_step",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    throws=(engine.StepFailed,),
)
def run_step(self, step_id: int) -> None:
    """Run one workflow step. Its chain continues only when the step succeeded."""

    def retry(countdown: float):
        raise self.retry(countdown=countdown, max_retries=None)

    try:
        engine.execute_step(step_id, hostname=self.request.hostname or "", retry=retry)
    except engine.Superseded as exc:
        # Nothing for this message to do (a duplicate, or the workflow moved on): end the chain.
        raise Ignore(str(exc)) from None
    except (OperationalError, InterfaceError) as exc:
        # The database went away while claiming or recording (the step itself retries its own
        # errors): try the message again shortly; the row decides what still needs doing.
        raise self.retry(countdown=2, max_retries=None, exc=exc) from None


@shared_task(name="workflows.on_step_failed", ignore_result=True)
def on_step_failed(workflow_id: int, *args) -> None:
    """link_error of every chain: compensate the failed workflow."""
    engine.handle_failure(workflow_id)


@shared_task(name="workflows.reconcile", ignore_result=True)
def reconcile() -> dict:
    return dict(engine.reconcile())


@shared_task(name="workflows.raw_noop")
def raw_noop() -> None:
    """Does nothing: the raw Celery baseline that bench/workflows.py compares the engine with."""
