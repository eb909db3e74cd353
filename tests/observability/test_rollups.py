"""Rolled-up usage history: 1-minute periods from the raw samples, 10-minute ones from those,
each once, idempotent, pruned by their own retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from hivemind.config import load_config
from observability import rollups
from observability.models import UsageRollup, UsageSample
from tests.nodes.conftest import make_app

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def samples(tenant, app, node, *, minutes: int, start: datetime = T0, replica: int = 0, cpu=None) -> None:
    """Four samples a minute (every 15 s) of one replica; cpu(i) gives the i-th sample's CPU."""
    cpu = cpu or (lambda i: 100 + i % 4 * 10)
    UsageSample.objects.bulk_create(
        UsageSample(at=start + timedelta(seconds=15 * i), node=node, tenant=tenant, app=app, replica=replica,
                    container_name=f"{app.name}-{replica}", cpu_millis=cpu(i), memory_bytes=1000 + i)
        for i in range(minutes * 4)
    )  # fmt: skip


@pytest.mark.django_db
def test_minutes_then_ten_minutes_each_once(world):
    app, _ = make_app(world.a, "web")
    samples(world.a, app, None, minutes=25)
    samples(world.a, app, None, minutes=25, replica=1, cpu=lambda i: 500)
    written = rollups.rollup(now=T0 + timedelta(minutes=25, seconds=31))
    # 25 finished minutes per replica; two finished 10-minute periods (the third is not over).
    assert written == {"1m": 50, "10m": 4}
    first = UsageRollup.objects.get(resolution=60, app=app, replica=0, at=T0)
    assert (first.samples, first.cpu_millis_avg, first.cpu_millis_max) == (4, 115.0, 130)
    assert (first.memory_bytes_avg, first.memory_bytes_max, first.tenant) == (1001.5, 1003, world.a)
    ten = UsageRollup.objects.get(resolution=600, app=app, replica=0, at=T0 + timedelta(minutes=10))
    assert (ten.samples, ten.cpu_millis_avg, ten.cpu_millis_max) == (40, 115.0, 130)
    assert ten.memory_bytes_avg == sum(1000 + i for i in range(40, 80)) / 40
    assert UsageRollup.objects.get(resolution=600, replica=1, at=T0).cpu_millis_avg == 500
    # Again at the same time: nothing new, nothing changed.
    assert rollups.rollup(now=T0 + timedelta(minutes=25, seconds=59)) == {"1m": 0, "10m": 0}
    assert UsageRollup.objects.count() == 54
    # Ten minutes more of replica 0: the period 20-30 is over (both replicas' rows), the minute
    # 34 not yet LATE seconds over waits for the next pass.
    samples(world.a, app, None, minutes=10, start=T0 + timedelta(minutes=25))
    assert rollups.rollup(now=T0 + timedelta(minutes=35, seconds=10)) == {"1m": 9, "10m": 2}
    assert rollups.rollup(now=T0 + timedelta(minutes=35, seconds=40)) == {"1m": 1, "10m": 0}
    partial = UsageRollup.objects.get(resolution=600, replica=1, at=T0 + timedelta(minutes=20))
    assert partial.samples == 20  # its five minutes: what there was


@pytest.mark.django_db
def test_a_gap_is_skipped_and_catch_up_is_bounded(world):
    app, _ = make_app(world.a, "web")
    samples(world.a, app, None, minutes=2)
    later = T0 + timedelta(hours=5)
    samples(world.a, app, None, minutes=2, start=later)
    assert rollups.rollup(now=T0 + timedelta(minutes=2, seconds=30)) == {"1m": 2, "10m": 0}
    # The five empty hours cost no rows and no pass: the next one starts at the next sample.
    assert rollups.rollup(now=later + timedelta(minutes=2, seconds=30))["1m"] == 2
    many = T0 + timedelta(days=1)
    samples(world.a, app, None, minutes=rollups.CATCH_UP + 20, start=many)
    end = many + timedelta(minutes=rollups.CATCH_UP + 20, seconds=30)
    assert rollups.rollup(now=end)["1m"] == rollups.CATCH_UP
    assert rollups.rollup(now=end)["1m"] == 20


@pytest.mark.django_db
def test_each_resolution_is_pruned_by_its_retention(world):
    app, _ = make_app(world.a, "web")
    config = load_config({"HIVEMIND_ROLLUP_RETENTION_1M": "3600", "HIVEMIND_ROLLUP_RETENTION_10M": "86400"})
    now = T0 + timedelta(days=2)
    for resolution, age in ((60, timedelta(minutes=59)), (60, timedelta(minutes=61)), (600, timedelta(hours=23)),
                            (600, timedelta(hours=25))):  # fmt: skip
        UsageRollup.objects.create(
            resolution=resolution, at=now - age, tenant=world.a, app=app, replica=0, samples=1,
            cpu_millis_avg=1, cpu_millis_max=1, memory_bytes_avg=1, memory_bytes_max=1,
        )  # fmt: skip
    with override_settings(CONFIG=config):
        assert rollups.prune(now=now) == 2
    assert sorted(UsageRollup.objects.values_list("resolution", flat=True)) == [60, 600]


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("HIVEMIND_ROLLUP_RETENTION_1M", "60", "expected a number from 3600 to 2592000, got 60"),
        ("HIVEMIND_ROLLUP_RETENTION_10M", "a week", "expected a whole number, got 'a week'"),
    ],
)
def test_a_bad_retention_is_refused_naming_it(variable, value, problem):
    from hivemind.config import ConfigError

    with pytest.raises(ConfigError) as refused:
        load_config({variable: value})
    assert variable in str(refused.value) and problem in str(refused.value)
