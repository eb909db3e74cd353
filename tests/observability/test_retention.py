"""Samples are kept HIVEMIND_SAMPLE_RETENTION, pruned from beat; the two settings are validated;
the admin shows samples read-only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from hivemind.applications.models import App
from hivemind.config import ConfigError, load_config
from hivemind.nodes.models import Node
from observability import tasks
from observability.models import UsageSample


def add_samples(tenant, *ages: timedelta) -> list[UsageSample]:
    node = Node.objects.create(name="kept-node")
    app = App.objects.create(tenant=tenant, name="kept-app")
    now = timezone.now()
    return UsageSample.objects.bulk_create(
        UsageSample(
            at=now - age, node=node, tenant=tenant, app=app, container_name=f"c-{i}", cpu_millis=1, memory_bytes=1
        )
        for i, age in enumerate(ages)
    )


@pytest.mark.django_db
def test_pruning_drops_what_is_older_than_the_retention_and_keeps_the_rest(world):
    retention = timedelta(seconds=settings.CONFIG.sample_retention)
    assert retention == timedelta(hours=2)  # the default: the suite does not set it
    add_samples(world.a, retention + timedelta(minutes=1), retention - timedelta(minutes=1), timedelta(0))
    assert tasks.usage_samples_prune() == 1
    assert sorted(UsageSample.objects.values_list("container_name", flat=True)) == ["c-1", "c-2"]
    assert tasks.usage_samples_prune() == 0


def test_beat_prunes_on_the_control_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["observability-prune-samples"]
    assert entry["task"] == tasks.usage_samples_prune.name == "observability.usage_samples_prune"
    assert entry["options"]["queue"] == settings.CONTROL_QUEUE
    assert 0 < entry["schedule"] <= 600


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"HIVEMIND_VAR_DIR": str(tmp_path / "var")}


def test_sampling_settings_default_and_0_turns_sampling_off(env):
    config = load_config(env)
    assert (config.sample_interval, config.sample_retention) == (15, 7200)
    config = load_config({**env, "HIVEMIND_SAMPLE_INTERVAL": "0", "HIVEMIND_SAMPLE_RETENTION": "86400"})
    assert (config.sample_interval, config.sample_retention) == (0, 86400)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("HIVEMIND_SAMPLE_INTERVAL", "-1", "expected a number from 0 to 3600, got -1"),
        ("HIVEMIND_SAMPLE_INTERVAL", "15s", "expected a whole number, got '15s'"),
        ("HIVEMIND_SAMPLE_RETENTION", "600", "expected a number from 3600 to 604800, got 600"),
        ("HIVEMIND_SAMPLE_RETENTION", "-7200", "expected a number from 3600 to 604800, got -7200"),
    ],
)
def test_a_bad_sampling_setting_is_refused_naming_it(env, variable, value, problem):
    with pytest.raises(ConfigError) as refused:
        load_config({**env, variable: value})
    assert str(refused.value) == f"{variable}: {problem}"


@pytest.mark.django_db
def test_the_admin_lists_samples_read_only(world):
    sample = add_samples(world.a, timedelta(minutes=1))[0]
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("sample-admin", password="pw-for-tests-only"))
    listing = client.get("/admin/observability/usagesample/")
    assert listing.status_code == 200
    assert sample.container_name in listing.content.decode()
    assert client.get("/admin/observability/usagesample/add/").status_code == 403
    page = client.get(f"/admin/observability/usagesample/{sample.pk}/change/")
    assert page.status_code == 200 and "Save" not in page.content.decode()
