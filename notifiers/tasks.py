"""Thin Celery tasks of the notifiers package (control queue)."""

from celery import shared_task


@shared_task(name="notifiers.deliver", ignore_result=True)
def deliver(delivery: int) -> None:
    """One attempt at a delivery; a failed one that may be retried is queued again after its backoff."""
    from notifiers.services import delivery_attempt

    retry = delivery_attempt(delivery_id=delivery)
    if retry is not None:
        deliver.apply_async((delivery,), countdown=retry, queue=deliver.app.conf.task_default_queue)


@shared_task(name="notifiers.deliveries_due", ignore_result=True)
def deliveries_due() -> list[int]:
    """Beat: queue again the deliveries whose queued attempt was lost."""
    from notifiers.services import deliveries_due as due

    found = due()
    for delivery in found:
        deliver.apply_async((delivery,), queue=deliver.app.conf.task_default_queue)
    return found
