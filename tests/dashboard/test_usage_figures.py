"""The app and node pages show the latest figures the agents sampled: per replica CPU, memory,
network and disk counters; per node the machine's CPU, load, memory and disk."""

from __future__ import annotations

import pytest
from django.utils import timezone

from hivemind.applications.models import Container
from observability.models import ContainerStat, NodeStat
from tests.dashboard.test_pages import text
from tests.nodes.conftest import make_container

pytestmark = pytest.mark.django_db


def test_the_app_page_shows_each_running_replicas_latest_figures(world, apps, ready_node, login):
    app = apps["mine"]
    running = make_container(world.a, ready_node, app=app, replica=0, state=Container.State.RUNNING)
    stopped = make_container(world.a, ready_node, app=app, replica=1, state=Container.State.EXITED)
    now = timezone.now()
    ContainerStat.objects.create(
        container=running, at=now, cpu_millis=250, memory_bytes=48 * 2**20, network_rx_bytes=3 * 2**20,
        network_tx_bytes=2**20, block_read_bytes=5 * 2**20, block_write_bytes=7 * 2**20,
    )  # fmt: skip
    ContainerStat.objects.create(container=stopped, at=now, cpu_millis=999, memory_bytes=999 * 2**20)
    page = text(login("viewer").get(f"/apps/{app.pk}/"))
    assert '<td class="usage-cpu">250m</td><td class="usage-memory">48 MiB</td>' in page
    assert '<td class="usage-network">3 MiB / 1 MiB</td><td class="usage-disk">5 MiB / 7 MiB</td>' in page
    assert "999" not in page  # a stopped replica's last figures are history, not shown as now
    assert "not sampled (not running)" in page


def test_the_node_page_shows_the_machine_or_says_it_was_not_sampled(world, ready_node, login):
    client = login("viewer")
    assert "not sampled yet" in text(client.get(f"/nodes/{ready_node.name}/"))
    NodeStat.objects.create(
        node=ready_node, at=timezone.now(), cpu_used_ratio=0.375, load1=1.25, load5=0.5, load15=0.25,
        memory_total_bytes=8 * 2**30, memory_available_bytes=3 * 2**30, disk_total_bytes=100 * 2**30,
        disk_free_bytes=40 * 2**30,
    )  # fmt: skip
    page = text(client.get(f"/nodes/{ready_node.name}/"))
    assert '<dd id="machine-cpu">38 %</dd>' in page
    assert '<dd id="machine-load">1.25, 0.50, 0.25</dd>' in page
    assert '<dd id="machine-memory">3 GiB of 8 GiB</dd>' in page
    assert '<dd id="machine-disk">40 GiB of 100 GiB</dd>' in page


def test_long_charts_read_the_rollups_and_a_bad_window_is_400(world, apps, login):
    import re
    from datetime import timedelta

    from observability.models import UsageRollup

    app = apps["mine"]
    now = timezone.now().replace(second=0, microsecond=0)
    UsageRollup.objects.bulk_create(
        UsageRollup(resolution=resolution, at=now - timedelta(minutes=m), tenant=world.a, app=app, replica=r,
                    samples=4, cpu_millis_avg=100 + r, cpu_millis_max=150, memory_bytes_avg=2**20,
                    memory_bytes_max=2**21)
        for resolution, step, count in ((60, 1, 23 * 60), (600, 10, 6 * 24 * 6))
        for m in range(0, step * count, step)
        for r in (0, 1)
    )  # fmt: skip
    client = login("viewer")
    for window, points, title in (("24h", 138, "last 24 hours"), ("7d", 144, "last 7 days")):
        page = text(client.get(f"/apps/{app.pk}/?window={window}"))
        assert f"CPU used by web, {title}" in page
        lines = re.findall(r'<polyline class="series"[^>]* points="([^"]+)"', page)
        assert len(lines) == 2 and all(points <= len(line.split()) <= points + 1 for line in lines), (window, lines)
    assert "201m" in text(client.get(f"/apps/{app.pk}/?window=24h"))  # two replicas' averages, summed
    refused = client.get(f"/apps/{app.pk}/?window=1y")
    assert refused.status_code == 400 and "window: expected one of 1h, 24h, 7d, got &#x27;1y&#x27;" in text(refused)
