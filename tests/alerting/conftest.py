"""Fixtures of the alerting tests: a collector of the test's own, registered in the metrics
engine's registry for the test and removed after, whose series the test sets."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from observability import registry


class TestCollector:
    """Serves `hivemind_test_load{tenant,app,replica}` (a gauge) and
    `hivemind_test_errors_total{tenant,app}` (a counter) with the values set in `load` / `errors`."""

    __test__ = False  # not a pytest class

    def __init__(self):
        self.load: dict[tuple[str, str, str], float] = {}
        self.errors: dict[tuple[str, str], float] = {}

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        load = GaugeMetricFamily("hivemind_test_load", "A test gauge.", labels=["tenant", "app", "replica"])
        for labels, value in self.load.items():
            load.add_metric(list(labels), value)
        errors = CounterMetricFamily("hivemind_test_errors", "A test counter.", labels=["tenant", "app"])
        for labels, value in self.errors.items():
            errors.add_metric(list(labels), value)
        return [load, errors]


@pytest.fixture
def collector():
    found = TestCollector()
    registry.register(found, name="alerting-test")
    yield found
    registry.unregister("alerting-test")
