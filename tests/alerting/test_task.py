"""The beat entry and the thin task: every HIVEMIND_ALERT_INTERVAL seconds on the control queue,
one pass of rules_evaluate."""

from __future__ import annotations

from django.conf import settings

from alerting import services
from alerting.models import Alert
from alerting.tasks import rules_evaluate


def test_beat_runs_one_pass_per_interval_on_the_control_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["alerting-evaluate"]
    assert entry["task"] == rules_evaluate.name == "alerting.rules_evaluate"
    assert entry["schedule"] == float(settings.CONFIG.alert_interval) == 15.0
    assert entry["options"] == {"queue": "control", "expires": 15.0}


def test_the_task_runs_a_pass(world, collector):
    collector.load[("tenant-a", "web", "0")] = 0.9
    services.rule_create(tenant=world.a, name="load", metric="hivemind_test_load", threshold=0.5,
                         actor=world.users["staff"])  # fmt: skip
    result = rules_evaluate.run()  # the body, as a worker runs it (apply() would close the test's connection)
    assert (result["rules"], result["errors"]) == (1, 0)
    assert Alert.objects.get().state == "firing"


def test_a_pass_is_skipped_while_another_runs(world, collector):
    """Beat's next pass while a slow one still runs (another worker holds the lock): skipped."""
    import psycopg
    from django.db import connection

    collector.load[("tenant-a", "web", "0")] = 0.9
    services.rule_create(tenant=world.a, name="load", metric="hivemind_test_load", threshold=0.5,
                         actor=world.users["staff"])  # fmt: skip
    db = connection.settings_dict
    other = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [services.PASS_LOCK])
        assert services.rules_evaluate()["skipped"] is True
        assert not Alert.objects.exists()
        other.execute("SELECT pg_advisory_unlock(%s)", [services.PASS_LOCK])
        assert services.rules_evaluate()["rules"] == 1
    finally:
        other.close()
    assert Alert.objects.get().state == "firing"
