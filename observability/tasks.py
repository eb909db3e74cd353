"""The Celery tasks of observability. Thin: each one calls one service."""

from __future__ import annotations

from celery import shared_task

from observability import services


@shared_task(name="observability.usage_samples_prune", ignore_result=True)
def usage_samples_prune() -> int:
    """Beat, on the control queue: drop usage samples older than HIVEMIND_SAMPLE_RETENTION."""
    return services.usage_samples_prune()


@shared_task(name="observability.usage_rollup", ignore_result=True)
def usage_rollup() -> dict:
    """Beat, on the control queue, every minute: roll up the usage samples of finished minutes."""
    from observability import rollups

    return rollups.rollup()
