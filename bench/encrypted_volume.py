"""Sequential write and read throughput in a container: an encrypted volume (gocryptfs over a
btrfs subvolume, storage/crypt.py) against a plain one (the subvolume itself) in the same pool.

Setup: a btrfs file system on a sparse 4 GiB loop file (storage/loopfs.py) under
<var dir>/bench-crypt, a btrfs pool in it (storage/providers/btrfs.py) with two 1 GiB volumes:
`plain`, and `encrypted` (a random data key, its ciphertext directory made by crypt.initialise
at the production scrypt cost, its plaintext view mounted by crypt.mount exactly as a node
mounts it for a replica: -allow_other -noprealloc); one simulated node (tests/netsim.py: a
network namespace with a private dockerd) runs one busybox container per volume, the volume
bind-mounted at /data, no network. No database: the keys' path is not what is measured.

Measured, BENCH_ROUNDS (3) rounds alternating plain / encrypted, medians:

- write: `dd if=/dev/zero of=/data/f bs=1M count=BENCH_MIB conv=fsync` (a new file each round);
- read: the page cache dropped first (`sync; echo 1 > /proc/sys/vm/drop_caches`: the whole
  machine's clean page cache, gocryptfs's view included), then `dd if=/data/f of=/dev/null bs=1M`.

Each is timed around `docker exec` (the same ~tens of ms of exec for both) and reported in MiB/s,
with the ratio encrypted / plain. Everything it made goes at the end (containers, daemon,
namespace, mounts, loop device and file).

Environment: BENCH_ROUNDS (3), BENCH_MIB (256). Needs root, dockerd, nsenter, btrfs, gocryptfs, fuse.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt  # noqa: E402 - after the path is set

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MIB = int(os.environ.get("BENCH_MIB", "256"))
IMAGE = "hivemind/busybox:latest"
POOL_BYTES = 4 << 30
VOLUME_BYTES = 1 << 30


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


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("encrypted_volume.py needs root (a loop device, FUSE mounts, a dockerd of its own)")
    for tool in ("gocryptfs", "btrfs", "dockerd", "nsenter"):
        if shutil.which(tool) is None:
            raise SystemExit(f"encrypted_volume.py needs {tool}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.conf import settings

    from storage import crypt, loopfs
    from storage.providers.btrfs import BtrfsProvider
    from tests.netsim import SimCluster

    reason = loopfs.btrfs_available()
    if reason is not None:
        raise SystemExit(f"no btrfs here: {reason}")
    base = Path(settings.VAR_DIR) / "bench-crypt"
    shutil.rmtree(base / "var", ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    settings.VAR_DIR = base / "var"  # the views' mount points, not a running platform's
    image, mountpoint = base / "pool.img", base / "mnt"
    cluster, containers = SimCluster(1, sim_dir=base / "sim"), []
    loopfs.ensure_btrfs(image, POOL_BYTES, mountpoint)
    try:
        provider = BtrfsProvider(mountpoint / "pool")
        provider.prepare()
        provider.create("v1", VOLUME_BYTES)
        provider.create("v2", VOLUME_BYTES)
        key = secrets.token_bytes(32)
        started = time.perf_counter()
        crypt.initialise(provider.path("v2"), key, scryptn=16)
        init_s = time.perf_counter() - started
        started = time.perf_counter()
        view = crypt.mount(provider.path("v2"), "v2", key)
        mount_s = time.perf_counter() - started
        (node,) = cluster.start().nodes
        hosts = {"plain": provider.path("v1"), "encrypted": view}
        runners = {}
        for name, host in hosts.items():
            runners[name] = node.client.containers.run(
                IMAGE, ["sleep", "3600"], name=f"bench-{name}", detach=True, init=True, network_mode="none",
                volumes={str(host): {"bind": "/data", "mode": "rw"}},
            )  # fmt: skip
            containers.append(runners[name])
        write = {name: [] for name in hosts}
        read = {name: [] for name in hosts}
        for _round in range(ROUNDS):
            for name, container in runners.items():
                timed_exec(container, "rm -f /data/f; sync")
                write[name].append(
                    MIB / timed_exec(container, f"dd if=/dev/zero of=/data/f bs=1M count={MIB} conv=fsync")
                )
            for name, container in runners.items():
                drop_caches()
                read[name].append(MIB / timed_exec(container, "dd if=/data/f of=/dev/null bs=1M"))
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the end; btrfs on a loop file; "
              f"{MIB} MiB, {ROUNDS} rounds alternating, medians (MiB/s)")  # fmt: skip
        print(f"gocryptfs init (scryptn 16) {init_s:.2f} s, mount {mount_s:.2f} s")
        for what, results in (("write (conv=fsync)", write), ("read (cold cache)", read)):
            plain, encrypted = statistics.median(results["plain"]), statistics.median(results["encrypted"])
            print(f"{what:20} plain {plain:7.1f}  encrypted {encrypted:7.1f}  ratio {encrypted / plain:.2f}x"
                  f"   (plain: {fmt(results['plain'])}; encrypted: {fmt(results['encrypted'])})")  # fmt: skip
    finally:
        for container in containers:
            container.remove(force=True)
        cluster.stop()
        crypt.release_all()
        loopfs.release(mountpoint, image)
        image.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
