"""The Celery tasks of observability. Thin: each one calls one service."""

from __future__ import annotations

from celery import shared_task

from observability import services


@shared_task(name="observability.usage_samples_prune", ignore_result=True)
def usage_samples_prune() -> int:
    """Beat, on the control queue: drop usage samples older than HIVEMIND_SAMPLE_RETENTION."""
    return services.usage_samples_prune()
