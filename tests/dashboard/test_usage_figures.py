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
