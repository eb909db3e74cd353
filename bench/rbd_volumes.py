"""RBD volumes against btrfs volumes, side by side in one run: a volume's create + attach + first
container start, and sequential throughput in a container, with where an RBD attach spends its
time.

Setup: a throwaway single-node Ceph cluster (tests/ceph.py: one monitor, a manager, one OSD
with bluestore on a sparse file beside it, so that data reaches the disk as btrfs's does) under
<var dir>/bench-rbd, an RBD pool on it (storage/providers/rbd.py: rbd-fuse + loop + xfs, the
data path of nodes without krbd or nbd, as here); a btrfs file system on a sparse loop file with
a btrfs pool; one simulated node (tests/netsim.py: a network namespace with a private dockerd).
No database: what is measured is what the node does.

1. Create + attach + first start, BENCH_STARTS (5) volumes per way and round, BENCH_ROUNDS (3)
   rounds alternating which way goes first: `provider.create` + `provider.attach` (RBD: the
   image through librbd; rbd-fuse, a loop device, mkfs.xfs, mount) + `docker run -d` of
   busybox with the volume bind-mounted at /data; from nothing to the container running,
   medians. The RBD attach's tools are timed one by one (where the time goes).
2. Sequential throughput in a container, BENCH_ROUNDS rounds alternating: write
   `dd if=/dev/zero of=/data/f bs=1M count=BENCH_MIB conv=fsync`, then read it back with the
   page cache dropped first; MiB/s, the ratio RBD / btrfs.

Everything it made goes at the end (containers, daemon, namespace, mounts, loop devices, the
cluster and its files). Environment: BENCH_ROUNDS (3), BENCH_STARTS (5), BENCH_MIB (256).
Needs root, dockerd, nsenter, btrfs, ceph-mon, ceph-osd, ceph-mgr, rbd-fuse, mkfs.xfs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt  # noqa: E402 - after the path is set

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
STARTS = int(os.environ.get("BENCH_STARTS", "5"))
MIB = int(os.environ.get("BENCH_MIB", "256"))
IMAGE = "hivemind/busybox:latest"
VOLUME_BYTES = 1 << 30
tool_seconds: dict[str, list[float]] = defaultdict(list)


def timed_exec(container, script: str) -> float:
    started = time.perf_counter()
    result = container.exec_run(["sh", "-c", script])
    elapsed = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"{script!r} failed in {container.name}: {result.output.decode(errors='replace')}")
    return elapsed


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")


def count_tools(rbd_module) -> None:
    """Time every tool the RBD data path runs (rbd-fuse, losetup, mkfs.xfs, mount, ...)."""
    real = rbd_module._run

    def timed(command, what, **kwargs):
        started = time.perf_counter()
        try:
            return real(command, what, **kwargs)
        finally:
            tool_seconds[command[0]].append(time.perf_counter() - started)

    rbd_module._run = timed


def starts(providers: dict, client) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per way: medians per round of seconds to a running container, and of the create part."""
    api, number = client.api, 0
    total: dict[str, list[float]] = {name: [] for name in providers}
    creates: dict[str, list[float]] = {name: [] for name in providers}
    for round_ in range(ROUNDS):
        order = list(providers) if round_ % 2 == 0 else list(reversed(providers))
        for name in order:
            provider, times, made_in = providers[name], [], []
            for _ in range(STARTS):
                number += 1
                volume = f"v{5000 + number}"
                started = time.perf_counter()
                provider.create(volume, VOLUME_BYTES)
                made_in.append(time.perf_counter() - started)
                host = provider.attach(volume)
                config = api.create_host_config(binds=[f"{host}:/data:rw"], network_mode="none")
                made = api.create_container(IMAGE, "sleep 600", name=f"bench-{name}-{number}", host_config=config,
                                            labels={"bench": "1"})  # fmt: skip
                api.start(made["Id"])
                times.append(time.perf_counter() - started)
            total[name].append(statistics.median(times))
            creates[name].append(statistics.median(made_in))
            for container in client.containers.list(all=True, filters={"label": "bench=1"}):
                container.remove(force=True)
            for volume in [f"v{5000 + n}" for n in range(number - STARTS + 1, number + 1)]:
                provider.delete(volume)
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {total[n][-1] * 1000:.0f} ms" for n in providers), flush=True)
    return total, creates


def throughput(providers: dict, client) -> tuple[dict, dict]:
    runners = {}
    for name, provider in providers.items():
        provider.create("v1", VOLUME_BYTES)
        runners[name] = client.containers.run(
            IMAGE, ["sleep", "3600"], name=f"bench-io-{name}", detach=True, init=True, network_mode="none",
            volumes={str(provider.attach("v1")): {"bind": "/data", "mode": "rw"}}, labels={"bench": "1"},
        )  # fmt: skip
    write: dict[str, list[float]] = {name: [] for name in providers}
    read: dict[str, list[float]] = {name: [] for name in providers}
    for round_ in range(ROUNDS):
        order = list(runners) if round_ % 2 == 0 else list(reversed(runners))
        for name in order:
            container = runners[name]
            timed_exec(container, "rm -f /data/f; sync")
            write[name].append(MIB / timed_exec(container, f"dd if=/dev/zero of=/data/f bs=1M count={MIB} conv=fsync"))
        for name in order:
            drop_caches()
            read[name].append(MIB / timed_exec(runners[name], "dd if=/data/f of=/dev/null bs=1M"))
    for container in runners.values():
        container.remove(force=True)
    return write, read


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("rbd_volumes.py needs root (loop devices, FUSE mounts, its own dockerd and Ceph)")
    for tool in ("ceph-mon", "ceph-osd", "ceph-mgr", "rbd-fuse", "mkfs.xfs", "btrfs", "dockerd", "nsenter"):
        if shutil.which(tool) is None:
            raise SystemExit(f"rbd_volumes.py needs {tool}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.conf import settings

    from storage import loopfs
    from storage.providers import rbd as rbd_module
    from storage.providers.btrfs import BtrfsProvider
    from storage.providers.rbd import RbdProvider
    from tests import ceph
    from tests.netsim import SimCluster

    reason = loopfs.btrfs_available()
    if reason is not None:
        raise SystemExit(f"no btrfs here: {reason}")
    base = Path(settings.VAR_DIR) / "bench-rbd"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    image, mountpoint = base / "pool.img", base / "mnt"
    sim = SimCluster(1, sim_dir=base / "sim")
    cluster = None
    providers: dict = {}
    try:
        started = time.perf_counter()
        cluster = ceph.start(base / "ceph", rgw=False, osd_bytes=16 << 30, objectstore="bluestore")
        cluster_s = time.perf_counter() - started
        cluster.make_pool("bench")
        loopfs.ensure_btrfs(image, 16 << 30, mountpoint)
        btrfs = BtrfsProvider(mountpoint / "pool")
        rbd = RbdProvider(base / "rbd", {"monitors": cluster.monitors, "key": cluster.admin_key, "pool": "bench"})
        providers = {"rbd": rbd, "btrfs": btrfs}
        for provider in providers.values():
            provider.prepare()
        count_tools(rbd_module)
        (node,) = sim.start().nodes
        print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}; Ceph {ceph_version()} "
              f"(1 mon, 1 mgr, 1 bluestore OSD on a sparse file, ready in {cluster_s:.1f} s); btrfs on a sparse "
              f"loop file; load {os.getloadavg()[0]:.2f} at the start", flush=True)  # fmt: skip
        total, creates = starts(providers, node.client)
        attach_tools = {tool: statistics.median(values) for tool, values in tool_seconds.items()}
        write, read = throughput(providers, node.client)
        ours, theirs = statistics.median(total["rbd"]), statistics.median(total["btrfs"])
        made = {name: statistics.median(values) * 1000 for name, values in creates.items()}
        print(f"create + attach + first start, medians of {ROUNDS} rounds of {STARTS}: rbd {ours * 1000:.0f} ms, "
              f"btrfs {theirs * 1000:.0f} ms: {ours / theirs:.2f}x; of which create: rbd {made['rbd']:.0f} ms, "
              f"btrfs {made['btrfs']:.0f} ms")  # fmt: skip
        tools = ", ".join(f"{tool} {seconds * 1000:.0f}" for tool, seconds in sorted(attach_tools.items()))
        print(f"  rbd attach, median per tool run (ms): {tools}")
        for what, results in (("write (conv=fsync)", write), ("read (cold cache)", read)):
            a, b = statistics.median(results["rbd"]), statistics.median(results["btrfs"])
            print(f"{what:20} rbd {a:7.1f} MiB/s  btrfs {b:7.1f} MiB/s  ratio {a / b:.2f}x"
                  f"   (rbd: {fmt(results['rbd'])}; btrfs: {fmt(results['btrfs'])})")  # fmt: skip
        print(f"load {os.getloadavg()[0]:.2f} at the end")
    finally:
        for container in sim.nodes[0].client.containers.list(all=True) if sim.nodes else []:
            container.remove(force=True)
        for provider in providers.values():
            for volume in provider.attached_volumes():
                provider.detach(volume)
        sim.stop()
        if cluster is not None:
            cluster.stop()
        loopfs.release(mountpoint, image)
        shutil.rmtree(base, ignore_errors=True)


def ceph_version() -> str:
    import subprocess

    out = subprocess.run(["ceph-osd", "--version"], capture_output=True, text=True).stdout.split()
    return out[2] if len(out) > 2 else "?"


if __name__ == "__main__":
    main()
