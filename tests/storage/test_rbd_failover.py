"""An app whose volume is an RBD image moves with its replica (issue 17, done when): two
simulated nodes (tests/netsim.py: a dockerd each, an agent each), one shared RBD pool on the
session's Ceph cluster. The replica's node loses its agent; self-healing starts the replica on
the other node, which fences the lost node (its rbd-fuse blocklisted in the cluster), attaches
the same image and reads the data. The lost node, back again, detaches and never mounts the
image while the other node holds it."""

from __future__ import annotations

import os
import time

from django.conf import settings

from hivemind.applications import services as app_services
from hivemind.nodes.models import Node
from networking.node import clear_node
from storage import services
from storage.models import StoragePool
from storage.node import report_pools
from storage.providers.commands import processes_of
from storage.steps import provider_of
from tests.conftest import wait_for
from tests.netsim import sim_cluster_fixture  # noqa: F401 (the sim_cluster fixture)
from tests.storage.test_replication import FAST, SERVER, agent_env, running_on, sh, start_agent, succeeded


def provider_on(pool: StoragePool, node_name: str):
    """The pool's provider as the agent of `node_name` makes it (its own directory and name)."""
    saved = settings.NODE_NAME
    settings.NODE_NAME = node_name
    try:
        return provider_of(pool)
    finally:
        settings.NODE_NAME = saved


def test_an_rbd_volume_follows_its_replica_to_another_node_after_fencing(
    platform_processes, world, sim_cluster, ceph_cluster, tmp_path
):  # fmt: skip
    platform_processes("worker", queues=[settings.CONTROL_QUEUE], extra_env=FAST)
    platform_processes("beat", extra_env=FAST)
    nodes = sim_cluster.nodes[:2]
    envs = {node.name: agent_env(node) for node in nodes}
    agents = {node.name: start_agent(platform_processes, envs[node.name]) for node in nodes}
    names = [node.name for node in nodes]
    wait_for(lambda: Node.objects.filter(name__in=names, status=Node.Status.READY).count() == 2, 60, "2 nodes")
    staff = world.users["staff"]
    ceph_cluster.make_pool("failover")
    pool = services.pool_create(
        name="ceph", provider="rbd", node=names[0], path=str(tmp_path / "rbd"), actor=staff,
        options={"monitors": ceph_cluster.monitors, "pool": "failover"}, secrets={"key": ceph_cluster.admin_key},
    )  # fmt: skip
    try:
        assert report_pools(names[0])["ceph"] == "ready"
        volume = services.volume_create(tenant=world.a, name="data", size="512Mi", pool="ceph", actor=staff)
        succeeded(volume.workflow)
        app = app_services.app_deploy(tenant=world.a, name="db", spec=SERVER, actor=staff)
        succeeded(app.workflow)
        first = wait_for(lambda: next((n for n in nodes if running_on(n, app)), None), 60, "the replica running")
        second = next(n for n in nodes if n is not first)
        on_first = running_on(first, app)
        sh(on_first, "dd if=/dev/urandom of=/data/big bs=1048576 count=32 2>/dev/null; sync")
        written = sh(on_first, "md5sum /data/big").split()[0]
        there = provider_on(pool, first.name)
        assert there.holders(volume.handle) == [first.name] and there.attached(volume.handle)

        agents[first.name].kill()  # SIGKILL: the node's agent is gone; its container still runs
        started = time.monotonic()
        on_second = wait_for(lambda: running_on(second, app), 180, "the replica rescheduled to the other node")
        moved = time.monotonic() - started
        assert sh(on_second, "md5sum /data/big").split()[0] == written
        here = provider_on(pool, second.name)
        assert here.holders(volume.handle) == [second.name]
        print(f"\nreplica on {second.name} with the volume's data {moved:.1f} s after {first.name}'s agent died")

        # The lost node was cut off: what its old replica writes now never reaches the image.
        late = on_first.exec_run(["sh", "-c", "echo late | dd of=/data/late conv=fsync"])
        assert late.exit_code != 0, late.output
        assert sh(on_second, "ls /data") == "big"

        # Back again, the first node lets go of the image and never mounts it while the second holds it.
        agents[first.name] = start_agent(platform_processes, envs[first.name])
        wait_for(lambda: not there.attached_volumes(), 60, f"{first.name} to detach the volume")
        wait_for(lambda: running_on(first, app) is None, 60, f"{first.name}'s old replica to go")
        time.sleep(2 * int(FAST["HIVEMIND_NODE_HEARTBEAT"]))  # a few more of its passes
        assert not there.attached_volumes() and here.holders(volume.handle) == [second.name]
        sh(on_second, "echo still-mine > /data/after; sync")
        assert sh(on_second, "cat /data/after") == "still-mine"
    finally:
        for process in agents.values():
            process.stop()
        for node in nodes:
            node.clear_containers()
            clear_node(node.client, node=node.name, netns=node.netns)
        for name in names:
            provider = provider_on(pool, name)
            for handle in provider.attached_volumes():
                provider.detach(handle, fenced=True)
        os.sync()
    # No rbd-fuse of this test is left: once the cluster stops, one would never answer again,
    # and whatever resolves a path under its lazily detached mount would hang for good.
    left = [argv for _, argv in processes_of("rbd-fuse") if any(str(tmp_path) in arg for arg in argv)]
    assert not left, left
