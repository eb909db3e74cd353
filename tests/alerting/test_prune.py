"""Alert history, resolved alerts and ended silences older than 30 days are pruned from beat;
firing and pending alerts stay, whatever their age."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from alerting import services
from alerting.models import Alert, AlertEvent, Silence

pytestmark = pytest.mark.django_db


def test_what_is_older_than_30_days_goes_and_the_rest_stays(world):
    staff, now = world.users["staff"], timezone.now()
    rule = services.rule_create(tenant=world.a, name="r", metric="hivemind_app_replicas_desired", actor=staff)
    old, recent = now - timedelta(days=31), now - timedelta(days=29)

    def alert(fingerprint: str, state: str, since, resolved=None) -> Alert:
        made = Alert.objects.create(
            tenant=world.a, rule=rule, fingerprint=fingerprint, group_key="g", state=state, active_at=since,
            evaluated_at=now, resolved_at=resolved,
        )  # fmt: skip
        AlertEvent.objects.create(tenant=world.a, alert=made, rule=rule, kind="pending", at=since)
        return made

    gone = alert("gone", Alert.State.RESOLVED, old - timedelta(days=1), resolved=old)
    kept_resolved = alert("kept", Alert.State.RESOLVED, old, resolved=recent)
    firing = alert("firing", Alert.State.FIRING, old)
    for ends in (old, recent):
        Silence.objects.create(tenant=world.a, matchers=[], starts_at=ends - timedelta(hours=1), ends_at=ends)
    assert services.history_prune(now=now) == {"events": 3, "alerts": 1, "silences": 1}
    assert set(Alert.objects.values_list("pk", flat=True)) == {kept_resolved.pk, firing.pk}
    assert not AlertEvent.objects.exists()  # all three events were older than 30 days
    assert list(Silence.objects.values_list("ends_at", flat=True)) == [recent]
    assert not Alert.objects.filter(pk=gone.pk).exists()
    assert services.history_prune(now=now) == {"events": 0, "alerts": 0, "silences": 0}


def test_beat_prunes_every_hour_on_the_control_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["alerting-history-prune"]
    assert entry["task"] == "alerting.history_prune" and entry["schedule"] == 3600.0
    assert entry["options"]["queue"] == settings.CONTROL_QUEUE
