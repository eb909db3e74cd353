"""Volume replication across two simulated nodes (tests/netsim.py): two dockerds, two agents
(real Celery workers, each serving its data endpoint), two btrfs pools (two directories of the
session's btrfs loop file, rows on two nodes), the controller and beat.

- An app on node A writes; the volume is replicated (full), 64 MiB change, replicated again:
  only the change travels (counted at the channel); each pool keeps one replication snapshot.
  A's agent is killed, A goes not ready, the replica is promoted: the app runs on B with the
  data of the last transfer (what A's replica wrote afterwards is not there).
- The sending agent is SIGKILLed in the middle of a transfer, then in the middle of a snapshot
  (the file system frozen meanwhile), and started again: each time the workflow finishes, each
  pool holds exactly one replication snapshot and the copy is the source's.

The simulation's agents are host processes (their dockerds are in the nodes' namespaces), so
their data endpoints listen on 127.0.0.1, one port each: the bytes cross a real TCP connection
between two processes, not the simulated underlay.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time

import pytest
from django.conf import settings

from hivemind.applications import services as app_services
from hivemind.nodes.models import Node
from hivemind.workflows.models import Step, StepState, WorkflowState
from networking.node import clear_node
from storage import replication, services
from storage.models import StoragePool, Volume, VolumeReplica
from storage.node import report_pools
from storage.providers.btrfs import is_readonly, is_subvolume
from storage.replication import is_replication
from storage.steps import provider_of
from tests.applications.conftest import finished
from tests.conftest import free_port, wait_for
from tests.netsim import sim_cluster_fixture  # noqa: F401 (the sim_cluster fixture)

MiB = 1 << 20
FAST = {"HIVEMIND_NODE_HEARTBEAT": "2"}
SERVER = {
    "image": "hivemind/busybox:latest",
    "command": ["sh", "-c", "exec sleep 3600"],
    "restart": "no",
    "volumes": [{"volume": "data", "path": "/data"}],
}


def succeeded(workflow, timeout: float = 120):
    done = finished(workflow, timeout=timeout)
    assert done.state == WorkflowState.SUCCEEDED, done.error
    return done


def agent_env(node, **extra) -> dict:
    return {**FAST, **node.agent_env(), "HIVEMIND_DATA_ADDRESS": "127.0.0.1",
            "HIVEMIND_DATA_PORT": str(free_port()), **extra}  # fmt: skip


def start_agent(platform_processes, env: dict):
    return platform_processes("worker", queues=[f"node.{env['HIVEMIND_NODE_NAME']}"], extra_env=env)


@pytest.fixture
def two_nodes(platform_processes, world, sim_cluster, btrfs_mount):
    """The controller, beat and agents for sim-1 and sim-2, a btrfs pool on each; yields
    (cluster, agents, envs, pool A, pool B). Afterwards the nodes' containers, networks and
    the pools' contents go."""
    platform_processes("worker", queues=[settings.CONTROL_QUEUE], extra_env=FAST)
    platform_processes("beat", extra_env=FAST)
    nodes = sim_cluster.nodes[:2]
    envs = {node.name: agent_env(node) for node in nodes}
    agents = {node.name: start_agent(platform_processes, envs[node.name]) for node in nodes}
    names = [node.name for node in nodes]
    wait_for(lambda: Node.objects.filter(name__in=names, status=Node.Status.READY).count() == 2, 60, "2 nodes")
    wait_for(lambda: Node.objects.filter(name__in=names, data_endpoint__isnull=False).count() == 2, 30, "endpoints")
    pools = []
    for node in nodes:
        pool = StoragePool.objects.create(
            name=f"repl-{node.name}", provider="btrfs", node=Node.objects.get(name=node.name),
            path=str(btrfs_mount / f"repl-{node.name}-{time.time_ns()}"),
        )  # fmt: skip
        assert report_pools(node.name)[pool.name] == "ready"
        pools.append(StoragePool.objects.get(pk=pool.pk))
    try:
        yield sim_cluster, agents, envs, pools[0], pools[1]
    finally:
        for process in agents.values():
            process.stop()
        for node in nodes:
            node.clear_containers()
            clear_node(node.client, node=node.name, netns=node.netns)
        for pool in pools:
            for volume in Volume.objects.filter(pk__in=_handles_in(pool)):
                with contextlib.suppress(Exception):
                    provider_of(pool).delete(volume.handle)


def _handles_in(pool) -> list[int]:
    root = provider_of(pool).root
    found = {p.name for d in ("volumes", "snapshots") if (root / d).is_dir() for p in (root / d).iterdir()}
    return [int(name[1:]) for name in found if name.startswith("v") and name[1:].isdigit()]


def replication_snapshots(pool, volume) -> list[str]:
    return [s for s in provider_of(pool).snapshots(volume.handle) if is_replication(s)]


def digest(path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_random(path, size: int) -> None:
    with open(path, "wb") as file:
        for _ in range(size // MiB):
            file.write(os.urandom(MiB))
        os.fsync(file.fileno())


def running_on(node, app):
    found = [c for c in node.client.containers.list(filters={"label": f"io.hivemind.app={app.pk}"})]
    return found[0] if len(found) == 1 else None


def sh(container, script: str) -> str:
    result = container.exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output
    return result.output.decode().strip()


def test_replicate_change_64_mib_then_promote_after_node_loss(two_nodes, world):
    cluster, agents, _envs, pool_a, pool_b = two_nodes
    node_a, node_b = cluster.nodes[0], cluster.nodes[1]
    staff = world.users["staff"]
    volume = services.volume_create(tenant=world.a, name="data", size="512Mi", pool=pool_a.name, actor=staff)
    succeeded(volume.workflow)
    write_random(provider_of(pool_a).path(volume.handle) / "big", 160 * MiB)
    app = app_services.app_deploy(tenant=world.a, name="db", spec=SERVER, actor=staff)
    succeeded(app.workflow)
    on_a = wait_for(lambda: running_on(node_a, app), 30, "the replica on node A")

    replica, workflow = replication.replica_set(volume=volume, pool=pool_b.name, actor=staff)
    succeeded(workflow)
    replica.refresh_from_db()
    assert replica.state == VolumeReplica.State.READY and replica.full_last_transfer
    full = replica.bytes_last_transfer
    assert 160 * MiB <= full < 170 * MiB, full

    # The app changes 64 MiB in the middle of its file; the next transfer carries only that.
    sh(on_a, "dd if=/dev/urandom of=/data/big bs=1048576 count=64 seek=48 conv=notrunc 2>/dev/null; sync")
    at_transfer = sh(on_a, "md5sum /data/big").split()[0]
    workflow = replication.replica_start(volume=volume, actor=staff)
    succeeded(workflow)
    replica.refresh_from_db()
    sent = Step.objects.get(workflow=workflow, name="storage.replica_send").output
    assert not replica.full_last_transfer and sent["parent"] and sent["bytes_sent"] == sent["bytes_received"]
    assert 64 * MiB <= replica.bytes_last_transfer <= 1.2 * 64 * MiB, replica.bytes_last_transfer
    assert replica.bytes_last_transfer < full / 2
    assert replica.transfers == 2 and replica.last_error == ""
    print(f"\nfull transfer: {full} bytes; after changing 64 MiB: {replica.bytes_last_transfer} bytes "
          f"in {replica.seconds_last_transfer} s")  # fmt: skip
    # One replication snapshot on each side: the parent of the next transfer.
    assert replication_snapshots(pool_a, volume) == replication_snapshots(pool_b, volume) == [replica.last_snapshot]

    sh(on_a, "echo written-after-the-transfer > /data/after; sync")
    agents[node_a.name].kill()  # SIGKILL: the node's agent is gone
    wait_for(lambda: Node.objects.get(name=node_a.name).status != Node.Status.READY, 60, "node A not ready")

    promote = replication.replica_promote(volume=Volume.objects.get(pk=volume.pk), actor=staff)
    succeeded(promote)
    volume.refresh_from_db()
    assert volume.pool_id == pool_b.pk and volume.status == Volume.Status.READY
    assert not VolumeReplica.objects.filter(volume=volume).exists()
    on_b = wait_for(lambda: running_on(node_b, app), 120, "the app's replica on node B")
    assert sh(on_b, "md5sum /data/big").split()[0] == at_transfer
    assert sh(on_b, "ls /data") == "big"  # the file written after the last transfer stayed on A


def test_sigkill_of_the_sending_agent_in_a_transfer_and_in_a_snapshot(
    two_nodes, world, platform_processes, btrfs_mount
):
    cluster, agents, envs, pool_a, pool_b = two_nodes
    node_a = cluster.nodes[0]
    staff = world.users["staff"]
    # Node A sends at 8 MiB/s (HIVEMIND_REPLICATION_RATE, a real setting): a transfer long enough to kill.
    agents[node_a.name].stop()
    envs[node_a.name]["HIVEMIND_REPLICATION_RATE"] = str(8 * MiB)
    agents[node_a.name] = start_agent(platform_processes, envs[node_a.name])
    volume = services.volume_create(tenant=world.a, name="data", size="256Mi", pool=pool_a.name, actor=staff)
    succeeded(volume.workflow)
    source = provider_of(pool_a).path(volume.handle) / "big"
    write_random(source, 64 * MiB)

    replica, workflow = replication.replica_set(volume=volume, pool=pool_b.name, actor=staff)

    def sending():
        step = Step.objects.filter(workflow=workflow, name="storage.replica_send").first()
        return step is not None and step.state == StepState.RUNNING

    wait_for(sending, 60, "the transfer to start")
    time.sleep(2.5)  # about 20 of the 64 MiB on their way
    target_dir = provider_of(pool_b).root / "snapshots" / volume.handle
    partial = [p for p in target_dir.iterdir() if is_subvolume(p) and not is_readonly(p)]
    assert partial, "no receive in progress on node B"
    agents[node_a.name].kill()
    agents[node_a.name] = start_agent(platform_processes, envs[node_a.name])

    succeeded(workflow, timeout=150)
    send = Step.objects.get(workflow=workflow, name="storage.replica_send")
    assert send.attempts >= 2, send.history
    replica.refresh_from_db()
    assert replica.state == VolumeReplica.State.READY and replica.full_last_transfer
    assert 64 * MiB <= replica.bytes_last_transfer < 68 * MiB
    # Exactly one replication snapshot on each side, the same, holding the source's bytes.
    names = replication_snapshots(pool_a, volume)
    assert names == replication_snapshots(pool_b, volume) == [replica.last_snapshot]
    assert sorted(p.name for p in target_dir.iterdir()) == names  # no half-received leftover
    copied = target_dir / names[0] / "big"
    assert is_readonly(target_dir / names[0])
    assert digest(copied) == digest(provider_of(pool_a).root / "snapshots" / volume.handle / names[0] / "big")
    assert digest(copied) == digest(source)

    # SIGKILL in the middle of a snapshot: the pools' file system frozen (fsfreeze), the
    # snapshot's ioctl waits in the kernel; the agent is killed there, the file system thawed.
    write_random(source, 8 * MiB)
    subprocess.run(["fsfreeze", "-f", str(btrfs_mount)], check=True)
    try:
        workflow = replication.replica_start(volume=volume, actor=staff)
        wait_for(lambda: Step.objects.filter(workflow=workflow, name="storage.replica_snapshot",
                                             state=StepState.RUNNING).exists(), 60, "the snapshot step")  # fmt: skip
        time.sleep(0.5)
        # SIGKILL now, reaped after the thaw: a thread of the agent blocked on the frozen file
        # system (its pools' report) is in uninterruptible sleep and dies only once it thaws.
        os.killpg(agents[node_a.name].process.pid, signal.SIGKILL)
    finally:
        subprocess.run(["fsfreeze", "-u", str(btrfs_mount)], check=True)
    agents[node_a.name].kill()
    agents[node_a.name] = start_agent(platform_processes, envs[node_a.name])
    succeeded(workflow, timeout=150)
    assert Step.objects.get(workflow=workflow, name="storage.replica_snapshot").attempts >= 2
    replica.refresh_from_db()
    names = replication_snapshots(pool_a, volume)
    assert names == replication_snapshots(pool_b, volume) == [replica.last_snapshot]
    assert sorted(p.name for p in target_dir.iterdir()) == names
    assert digest(target_dir / names[0] / "big") == digest(source)

    succeeded(replication.replica_remove(volume=volume, actor=staff))
    assert not VolumeReplica.objects.filter(volume=volume).exists()
    assert not target_dir.exists() and replication_snapshots(pool_a, volume) == []


def test_the_schedule_starts_what_is_due_and_nothing_else(db, world):
    """`storage.replications_due` (beat): a transfer for each scheduled replica whose interval
    has passed since its last attempt; none for one asked only by hand, one in transfer, or one
    whose volume's node is not ready."""
    from datetime import timedelta

    from django.utils import timezone

    from hivemind.workflows.models import Workflow
    from tests.storage.test_api import make_pool, ready

    make_pool("src", node="st-1")
    target = make_pool("dst", node="st-2")
    now = timezone.now()
    rows = {}
    for name, interval, ago, state in [
        ("due", 60, 61, "ready"),
        ("fresh", 60, 30, "ready"),
        ("never", 60, None, "pending"),
        ("by-hand", None, 3600, "ready"),
        ("busy", 60, 3600, "replicating"),
        ("failed", 60, 120, "failed"),
    ]:
        volume = ready(services.volume_create(tenant=world.a, name=name, size="1Gi", pool="src", actor=None))
        rows[name] = VolumeReplica.objects.create(
            volume=volume, pool=target, interval_seconds=interval, state=state,
            last_attempt_at=now - timedelta(seconds=ago) if ago is not None else None,
        )  # fmt: skip
    started = replication.replications_due(now=now)
    kinds = Workflow.objects.filter(pk__in=started)
    assert sorted(w.params["volume"] for w in kinds) == sorted(rows[n].volume_id for n in ("due", "never", "failed"))
    assert {w.kind for w in kinds} == {"volume.replicate"}
    assert VolumeReplica.objects.get(pk=rows["due"].pk).state == VolumeReplica.State.REPLICATING
    assert replication.replications_due(now=now) == []  # started already: not again
    Node.objects.filter(name="st-1").update(status=Node.Status.NOT_READY)
    VolumeReplica.objects.update(state="ready", last_attempt_at=None)
    assert replication.replications_due(now=now) == []
