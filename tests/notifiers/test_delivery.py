"""Deliveries through a real Celery worker on the control queue: notify returns at once whatever
the peer's state, failed attempts are retried with exponential backoff (really waited for), a
peer that comes back gets it, one that stays down ends `failed` with its answer kept."""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta

import pytest

from notifiers import services
from notifiers.models import Delivery
from tests.conftest import free_port, wait_for
from tests.notifiers.test_kinds import SECRET, make, notification

pytestmark = pytest.mark.e2e
BACKOFF = {"HIVEMIND_NOTIFIER_BACKOFF": "1"}  # the worker waits 1 s, 2 s, 4 s...


def _gaps(delivery: Delivery) -> list[float]:
    times = [datetime.fromisoformat(entry["at"]) for entry in delivery.history]
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


def test_a_peer_that_stays_down_gets_retries_with_backoff_then_a_recorded_failure(
    platform_processes, world, receiver, settings
):
    settings.NOTIFIER_ATTEMPTS = 3
    receiver.status, receiver.answer = 500, b"database is on fire"
    platform_processes("worker", queues=[settings.CONTROL_QUEUE], extra_env=BACKOFF)
    notifier = make(world, "webhook", {"url": receiver.url}, {"secret": SECRET})
    down = make(world, "webhook", {"url": f"http://127.0.0.1:{free_port()}/"}, {"secret": SECRET}, "down")
    started = time.monotonic()
    refused = services.notify(notifier=notifier, notification=notification())
    unreachable = services.notify(notifier=down, notification=notification())
    assert time.monotonic() - started < 0.5  # recorded and queued, nothing sent yet
    for delivery in (refused, unreachable):
        wait_for(lambda d=delivery: Delivery.objects.get(pk=d.pk).state == Delivery.State.FAILED, 40, "failed")
        delivery.refresh_from_db()
        assert delivery.attempts == 3 and [e["ok"] for e in delivery.history] == [False] * 3
        first, second = _gaps(delivery)
        assert 1.0 <= first < 1.9 + 1.5 and 2.0 <= second < 2.9 + 1.5, delivery.history  # 1 s, then 2 s
    assert "500" in refused.last_error and "database is on fire" in refused.last_error
    assert "cannot reach" in unreachable.last_error
    assert len(receiver.received) == 3


def test_a_peer_that_comes_back_gets_it_on_the_next_attempt(platform_processes, world, receiver, settings):
    receiver.status = 502
    platform_processes("worker", queues=[settings.CONTROL_QUEUE], extra_env=BACKOFF)
    notifier = make(world, "webhook", {"url": receiver.url}, {"secret": SECRET})
    delivery = services.notify(notifier=notifier, notification=notification(status="resolved"))
    receiver.wait(1)
    receiver.status = 200
    wait_for(lambda: Delivery.objects.get(pk=delivery.pk).state == Delivery.State.DELIVERED, 30, "delivered")
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and [e["ok"] for e in delivery.history] == [False, True]
    assert "502" in delivery.last_error  # the failed attempt's answer stays on record
    assert [r.json()["status"] for r in receiver.received] == ["resolved", "resolved"]


@pytest.mark.django_db
def test_beat_queues_again_a_delivery_whose_message_was_lost(world):
    """A delivery left in `sending` by a killed worker counts as a failed attempt; one pending
    long past its time is due again."""
    notifier = make(world, "webhook", {"url": "http://127.0.0.1:9/"}, {"secret": SECRET})
    lost = services.notify(notifier=notifier, notification=notification())
    stuck = services.notify(notifier=notifier, notification=notification())
    old = lost.created_at.replace(year=2020)
    Delivery.objects.filter(pk=lost.pk).update(next_attempt_at=old)
    Delivery.objects.filter(pk=stuck.pk).update(state=Delivery.State.SENDING, attempts=1)
    Delivery.objects.filter(pk=stuck.pk).update(updated_at=old)
    assert services.deliveries_due() == [lost.pk]
    stuck.refresh_from_db()
    assert stuck.state == Delivery.State.PENDING and "interrupted" in stuck.last_error
    assert services.deliveries_due(now=stuck.next_attempt_at + (lost.created_at - old)) == [lost.pk, stuck.pk]


@pytest.mark.django_db
def test_finished_deliveries_are_pruned_after_30_days(world):
    notifier = make(world, "webhook", {"url": "http://127.0.0.1:9/"}, {"secret": SECRET})
    old, recent, waiting = (services.notify(notifier=notifier, notification=notification()) for _ in range(3))
    month_ago = old.created_at - timedelta(days=31)
    Delivery.objects.filter(pk=old.pk).update(state=Delivery.State.DELIVERED, updated_at=month_ago)
    Delivery.objects.filter(pk=recent.pk).update(state=Delivery.State.FAILED)
    Delivery.objects.filter(pk=waiting.pk).update(updated_at=month_ago)  # pending: kept whatever its age
    services.deliveries_due()
    assert set(Delivery.objects.values_list("pk", flat=True)) == {recent.pk, waiting.pk}


@pytest.mark.django_db(transaction=True)  # the receiver's thread deletes it on a connection of its own
def test_a_notifier_deleted_during_an_attempt_ends_it_quietly(world, receiver, settings):
    """The attempt records nothing (its row went with the notifier) and asks for no retry."""
    receiver.status = 500
    notifier = make(world, "webhook", {"url": receiver.url}, {"secret": SECRET})
    delivery = services.notify(notifier=notifier, notification=notification())
    original = receiver.server.RequestHandlerClass.do_POST

    def delete_then_answer(handler):
        from django.db import connection

        services.notifier_delete(notifier=notifier, actor=world.users["staff"])
        connection.close()
        original(handler)

    receiver.server.RequestHandlerClass.do_POST = delete_then_answer
    assert services.delivery_attempt(delivery_id=delivery.pk) is None
    assert not Delivery.objects.filter(pk=delivery.pk).exists()
