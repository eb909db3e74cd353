"""Thin Celery tasks of the applications package."""

from celery import shared_task

from hivemind.applications import reconcile
from hivemind.applications.logs import container_logs, container_stats  # noqa: F401 - registers the agents' read tasks


@shared_task(name="apps.reconcile", ignore_result=True)
def reconcile_apps() -> list[int]:
    """Beat: start heal rollouts for apps whose replicas are down (see reconcile.py)."""
    return reconcile.reconcile_apps()
