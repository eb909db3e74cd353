"""The agent's usage sampling on the suite's real dockerd: busybox containers that burn CPU or
sleep, their Container rows on this machine's node, and a real worker for the sampling thread."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from django.conf import settings

from hivemind.nodes.agent import Agent
from observability.models import NodeUsageSample, UsageSample
from observability.sampling import UsageSampler
from tests.conftest import wait_for
from tests.observability.conftest import BURN, IDLE

HALF_A_CORE = 500_000_000  # Docker's NanoCpus


def cgroup_cpu_ns(pid: int) -> int:
    """A container's cumulative CPU time read straight from its cgroup, not through Docker."""
    root = Path("/sys/fs/cgroup")
    unified = None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):  # cgroup v1
            return int((root / controllers / path.lstrip("/") / "cpuacct.usage").read_text())
        if controllers == "":
            unified = path.lstrip("/")
    for base in (root, root / "unified"):  # cgroup v2, alone or beside v1
        stat = base / unified / "cpu.stat"
        if unified is not None and stat.exists():
            fields = dict(line.split() for line in stat.read_text().splitlines())
            return int(fields["usage_usec"]) * 1000
    raise AssertionError(f"no CPU accounting found for pid {pid}")


def agent_for(node, **kwargs) -> Agent:
    return Agent(node_name=node.name, docker_host=settings.DOCKER_HOST, address="10.0.0.1", labels={}, **kwargs)


def test_a_busy_container_uses_what_its_cgroup_says_and_an_idle_one_almost_none(node, replicas):
    burner, burning = replicas(BURN, nano_cpus=HALF_A_CORE)
    idle, _ = replicas(IDLE)
    replicas(IDLE, row=False)  # managed, but no replica owns it (yet): not stored
    burning.reload()
    agent = agent_for(node)
    try:
        before, started = cgroup_cpu_ns(burning.attrs["State"]["Pid"]), time.monotonic()
        assert agent.sample() == 0  # the first reading of a container is only a baseline
        assert not UsageSample.objects.exists()
        time.sleep(3)
        assert agent.sample() == 2
        used = cgroup_cpu_ns(burning.attrs["State"]["Pid"]) - before
        truth = used / (time.monotonic() - started) / 1e6  # millicores over a window a little wider
    finally:
        agent.stop()
    samples = {s.container_name: s for s in UsageSample.objects.all()}
    assert set(samples) == {burner.name, idle.name}
    busy, calm = samples[burner.name], samples[idle.name]
    # What the cgroup counted, within 20 % (the two windows differ by the passes' own time), and
    # never above the 500 millicore limit; how much below depends on what else runs on the machine.
    assert abs(busy.cpu_millis - truth) <= 0.2 * truth + 10, (busy.cpu_millis, truth)
    assert busy.cpu_millis <= 550, busy.cpu_millis
    assert calm.cpu_millis <= 10, calm.cpu_millis
    assert busy.cpu_millis >= 5 * (calm.cpu_millis + 10), (busy.cpu_millis, calm.cpu_millis)
    for sample in (busy, calm):
        assert 0 < sample.memory_bytes < 64 * 2**20
        assert (sample.node, sample.app, sample.tenant) == (node, replicas.app, burner.tenant)
        assert sample.at == busy.at  # one pass, one time
    # The node's own row of that pass: the sum, what the node's chart reads.
    total = NodeUsageSample.objects.get()
    assert (total.node, total.at, total.containers) == (node, busy.at, 2)
    assert (total.cpu_millis, total.memory_bytes) == (
        busy.cpu_millis + calm.cpu_millis,
        busy.memory_bytes + calm.memory_bytes,
    )


def test_a_container_that_stops_or_vanishes_mid_pass_is_skipped(node, replicas):
    kept, _ = replicas(IDLE)
    _, removed = replicas(IDLE)
    _, stopped = replicas(IDLE)
    sampler = UsageSampler(node_name=node.name, docker_host=settings.DOCKER_HOST)
    try:
        listed = sampler.running()
        assert len(listed) == 3
        removed.remove(force=True)
        stopped.kill()
        readings, error = sampler.read(listed)
    finally:
        sampler.close()
    assert error is None
    assert [r.name for r in readings] == [kept.name]
    assert readings[0].memory_bytes > 0 and readings[0].cpu_ns > 0


def test_a_docker_that_does_not_answer_is_logged_once_and_stores_nothing(db, caplog, tmp_path):
    sampler = UsageSampler(node_name="testnode", docker_host=f"unix://{tmp_path}/no-docker.sock")
    with caplog.at_level(logging.WARNING, logger="observability.sampling"):
        assert sampler.sample() == 0
        assert sampler.sample() == 0
    sampler.close()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "usage samples: Docker at unix://" in warnings[0]
    assert sampler.failing


def test_the_agent_of_a_real_worker_samples_every_interval(platform_processes, node, replicas):
    burner, _ = replicas(BURN, nano_cpus=HALF_A_CORE)
    env = {"HIVEMIND_NODE_HEARTBEAT": "1", "HIVEMIND_SAMPLE_INTERVAL": "1"}
    worker = platform_processes("worker", queues=[f"node.{node.name}"], extra_env=env)
    wait_for(lambda: UsageSample.objects.filter(container_name=burner.name).count() >= 3, 30, "three samples")
    assert "usage samples every 1s" in worker.output()
    busiest = max(UsageSample.objects.filter(container_name=burner.name).values_list("cpu_millis", flat=True))
    assert 50 <= busiest <= 550, busiest  # it burns what the machine's other work leaves it, up to its limit


def test_no_sampling_thread_when_the_interval_is_0(transactional_db, tmp_path, suite_netns):
    # (suite_netns: whatever the agent's network threads do happens in the suite node's namespace)
    agent = Agent(
        node_name="sampling-off", docker_host=f"unix://{tmp_path}/no-docker.sock", address="10.0.0.1", labels={},
        sample_interval=0,
    )  # fmt: skip
    agent.start()
    try:
        names = [thread.name for thread in agent._threads]
    finally:
        agent.stop()
    assert names == [
        "node-heartbeat-sampling-off", "node-report-sampling-off", "node-network-sampling-off",
        "node-services-sampling-off", "node-storage-sampling-off", "node-data-sampling-off",
    ]  # fmt: skip
