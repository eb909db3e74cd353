"""How news reaches the nodes' DNS servers and load balancers without waiting for the next
once-a-second pass: committed changes are announced on Redis (networking/discovery.py) and
every node's listener wakes its services loop; Docker's events about a node's own replicas
wake it too (health), or run the agent's report (a replica started or died)."""

from __future__ import annotations

import threading

import pytest
from django.db import transaction

from hivemind.applications.models import LABEL_MANAGED
from networking import discovery
from networking.node import NodeServices
from tests.conftest import wait_for


@pytest.fixture
def listening():
    wake, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=discovery.listen, args=(wake, stop), daemon=True)
    thread.start()
    wait_for(wake.is_set, 10, "the listener to subscribe")  # it wakes once when it (re)subscribes
    wake.clear()
    yield wake
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_a_committed_change_wakes_every_listener_and_a_rolled_back_one_none(listening):
    with transaction.atomic():
        discovery.changed()
        discovery.changed()  # one message per transaction
        assert not listening.wait(0.3), "announced before the commit"
    wait_for(listening.is_set, 5, "the announcement")

    listening.clear()
    with pytest.raises(RuntimeError), transaction.atomic():
        discovery.changed()
        raise RuntimeError("rolled back")
    assert not listening.wait(0.5), "a rolled-back change was announced"

    discovery.changed()  # outside a transaction: at once
    wait_for(listening.is_set, 5, "the announcement")


def test_channels_are_per_platform():
    assert discovery.channel("redis://127.0.0.1:6379/15") == "hivemind:15:discovery"
    assert discovery.channel("redis://127.0.0.1:6379") == "hivemind:0:discovery"
    assert discovery.channel("redis://127.0.0.1:6379/3") != discovery.channel("redis://127.0.0.1:6379/15")


@pytest.mark.django_db(transaction=True)
def test_dockers_events_wake_the_services_loop_and_the_report(docker_client, busybox_image, suite_netns):
    started_or_died = threading.Event()
    services = NodeServices(node_name="news", netns=suite_netns, address="", on_container_event=started_or_died.set)
    services.start()
    try:
        wait_for(services.wake.is_set, 10, "the services to follow Docker's events")
        services.wake.clear()
        container = docker_client.containers.run(
            busybox_image,
            ["sh", "-c", "touch /ok; exec sleep 60"],
            name="hm-news-probe",
            labels={LABEL_MANAGED: "true"},
            healthcheck={"test": ["CMD", "test", "-f", "/ok"], "interval": 200_000_000, "retries": 1},
            init=True,
            detach=True,
        )
        try:
            wait_for(started_or_died.is_set, 10, "the start event")
            wait_for(services.wake.is_set, 10, "the health_status event")  # healthy
            services.wake.clear()
            started_or_died.clear()
            container.exec_run(["rm", "/ok"])
            wait_for(services.wake.is_set, 10, "the health_status event")  # unhealthy
            container.kill()
            wait_for(started_or_died.is_set, 10, "the die event")
            started_or_died.clear()
        finally:
            container.remove(force=True)
        wait_for(started_or_died.is_set, 10, "the destroy event")
        # A container without the managed label is none of the node's business.
        started_or_died.clear()
        docker_client.containers.run(busybox_image, ["true"], name="hm-news-other", remove=True)
        assert not started_or_died.wait(0.5)
    finally:
        services.stop()
    assert not any(thread.is_alive() for thread in threading.enumerate() if thread.name.endswith("-news"))
