"""Thin Celery tasks of the storage package."""

from celery import shared_task


@shared_task(name="storage.replications_due", ignore_result=True)
def replications_due() -> list[int]:
    """Beat: start the scheduled replications whose interval has passed (storage/replication.py)."""
    from storage.replication import replications_due as start_due

    return start_due()
