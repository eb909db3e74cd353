"""Thin Celery tasks of the storage package."""

from celery import shared_task


@shared_task(name="storage.replications_due", ignore_result=True)
def replications_due() -> list[int]:
    """Beat: start the scheduled replications whose interval has passed (storage/replication.py)."""
    from storage.replication import replications_due as start_due

    return start_due()


@shared_task(name="storage.scheduled_snapshot", ignore_result=True)
def scheduled_snapshot(volume: int, keep: int) -> dict:
    """Beat (a volume's snapshot schedule): a snapshot, then the automatic ones beyond `keep` go."""
    from storage.schedules import run

    return run(volume, keep)
