"""Reads of notifiers and deliveries (services write, selectors read)."""

from __future__ import annotations

from django.db.models import Count

from notifiers.models import Delivery, Notifier


def delivery_counts(notifier: Notifier) -> dict[str, int]:
    counts = dict.fromkeys(Delivery.State.values, 0)
    for row in notifier.deliveries.values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    return counts


def deliveries(notifier: Notifier):
    return notifier.deliveries.select_related("notifier").order_by("-created_at", "-pk")
