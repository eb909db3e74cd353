"""The Celery task of alerting. Thin: it calls one service."""

from __future__ import annotations

from celery import shared_task

from alerting import services


@shared_task(name="alerting.rules_evaluate", ignore_result=True)
def rules_evaluate() -> dict:
    """Beat, on the control queue, every HIVEMIND_ALERT_INTERVAL seconds: one pass over every rule."""
    return services.rules_evaluate()


@shared_task(name="alerting.history_prune", ignore_result=True)
def history_prune() -> dict:
    """Beat, on the control queue, every hour: alert history, resolved alerts and ended silences
    older than 30 days go."""
    return services.history_prune()
