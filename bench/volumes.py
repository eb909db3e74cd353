"""Volumes on btrfs: snapshot and clone time against the volume's size, and a volume's first
container start against Docker's own named volumes, side by side in one run.

Setup: a btrfs file system on a sparse loop file (storage/loopfs.py) under
<var dir>/bench-volumes (BENCH_POOL_GIB, 16 by default: at least twice the data), a btrfs pool
in it (storage/providers/btrfs.py, as a node's agent drives it), and one simulated node
(tests/netsim.py: a network namespace with a private dockerd whose data-root is on the host's
disk, not on the pool). No database: what is measured is what the node does.

1. Snapshot and clone, BENCH_SIZES (100 MiB, 1 GiB, 4 GiB of data from /dev/urandom, synced):
   `provider.snapshot` (a read-only snapshot) and `provider.clone` (a writable volume from it,
   with its own quota limit), each timed BENCH_ROUNDS (3) times (a new snapshot and clone each
   round, removed after), medians; against the naive copy of the same data, `cp -a
   --reflink=never` into a directory of the same file system (3 rounds as well; the page
   cache dropped before each so every copy reads from the loop file). Target: < 100 ms each
   and flat in the size.
2. Create + attach + first start: BENCH_STARTS (10) times per round, alternating, BENCH_ROUNDS
   rounds: `provider.create` (a subvolume with its quota limit) + `provider.attach` + `docker run -d`
   of busybox with the volume bind-mounted at /data (created and started: the API calls a
   node's start step makes), against `docker volume create` + `docker run -d -v VOL:/data`
   of the same image; from nothing to the container running, medians. Target: <= 1.5x.

Environment: BENCH_SIZES (100M,1G,4G), BENCH_ROUNDS (3), BENCH_STARTS (10), BENCH_POOL_GIB (16).
Needs root, btrfs, dockerd, nsenter.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt  # noqa: E402 - after the path is set

UNITS = {"M": 1 << 20, "G": 1 << 30}
SIZES = [int(s[:-1]) * UNITS[s[-1]] for s in os.environ.get("BENCH_SIZES", "100M,1G,4G").split(",")]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
STARTS = int(os.environ.get("BENCH_STARTS", "10"))
POOL_GIB = int(os.environ.get("BENCH_POOL_GIB", "16"))
IMAGE = "hivemind/busybox:latest"


def human(size: int) -> str:
    return f"{size >> 30} GiB" if size >= 1 << 30 else f"{size >> 20} MiB"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")


def fill(path: Path, size: int) -> None:
    """`size` bytes of random data in 64 MiB files, synced."""
    chunk = 64 << 20
    for index in range((size + chunk - 1) // chunk):
        count = min(chunk, size - index * chunk) >> 20
        subprocess.run(
            ["dd", "if=/dev/urandom", f"of={path / f'f{index:03d}'}", "bs=1M", f"count={count}", "status=none"],
            check=True,
        )
    os.sync()


def snapshots(provider, root: Path) -> list[tuple]:
    rows = []
    for number, size in enumerate(SIZES, start=1):
        volume = f"v{number}"
        provider.create(volume, size + (256 << 20))
        fill(provider.path(volume), size)
        snap_ms, clone_ms, copy_ms = [], [], []
        for round_ in range(ROUNDS):
            snapshot, clone = f"s{number}{round_}", f"v{100 + number * 10 + round_}"
            snap_ms.append(timed(lambda v=volume, s=snapshot: provider.snapshot(v, s)))
            room = size + (256 << 20)
            clone_ms.append(timed(lambda v=volume, s=snapshot, c=clone, r=room: provider.clone(v, s, c, r)))
            provider.delete(clone)
            provider.delete_snapshot(volume, snapshot)
            target = root / "copies" / f"{number}-{round_}"
            target.parent.mkdir(exist_ok=True)
            drop_caches()
            copy_ms.append(timed(lambda t=target, v=volume: _copy(provider.path(v), t)))
            shutil.rmtree(target)
            subprocess.run(["btrfs", "filesystem", "sync", str(root)], check=True, capture_output=True)
        provider.delete(volume)
        rows.append((size, snap_ms, clone_ms, copy_ms))
        print(
            f"{human(size)}: snapshot [{fmt(snap_ms)}] ms, clone [{fmt(clone_ms)}] ms, "
            f"cp -a --reflink=never [{fmt(copy_ms)}] ms",
            flush=True,
        )
    return rows


def _copy(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-a", "--reflink=never", str(source), str(target)], check=True)
    os.sync()


def starts(provider, client) -> dict[str, list[float]]:
    """Seconds from nothing to a running container with its volume, per way, medians per round."""
    figures: dict[str, list[float]] = {"hivemind": [], "docker": []}
    api = client.api
    number = 0
    for _round in range(ROUNDS):
        for way in ("hivemind", "docker") if _round % 2 == 0 else ("docker", "hivemind"):
            times = []
            for _ in range(STARTS):
                number += 1
                name = f"bench-start-{number}"
                started = time.perf_counter()
                if way == "hivemind":
                    volume = f"v{1000 + number}"
                    provider.create(volume, 64 << 20)
                    host = provider.attach(volume)
                    config = api.create_host_config(binds=[f"{host}:/data:rw"], network_mode="none")
                else:
                    api.create_volume(name=name)
                    config = api.create_host_config(binds=[f"{name}:/data:rw"], network_mode="none")
                made = api.create_container(IMAGE, "sleep 600", name=name, host_config=config, labels={"bench": "1"})
                api.start(made["Id"])
                times.append(time.perf_counter() - started)
            figures[way].append(statistics.median(times))
            for container in client.containers.list(all=True, filters={"label": "bench=1"}):
                container.remove(force=True)
            for volume in client.volumes.list():
                volume.remove(force=True)
            for volume in provider_volumes(provider):
                provider.delete(volume)
        print(
            f"round {_round + 1}: hivemind {figures['hivemind'][-1] * 1000:.0f} ms, "
            f"docker {figures['docker'][-1] * 1000:.0f} ms",
            flush=True,
        )
    return figures


def provider_volumes(provider) -> list[str]:
    root = provider.root / "volumes"
    return [p.name for p in root.iterdir() if p.name.startswith("v")] if root.is_dir() else []


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("volumes.py needs root (a loop device, mounts, a dockerd of its own)")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.conf import settings

    from storage import loopfs
    from storage.providers.btrfs import BtrfsProvider
    from tests.netsim import SimCluster

    reason = loopfs.btrfs_available()
    if reason is not None:
        raise SystemExit(f"no btrfs here: {reason}")
    base = Path(settings.VAR_DIR) / "bench-volumes"
    image, mountpoint = base / "pool.img", base / "mnt"
    loopfs.release(mountpoint, image)
    image.unlink(missing_ok=True)
    cluster = SimCluster(1)
    try:
        loopfs.ensure_btrfs(image, POOL_GIB << 30, mountpoint)
        provider = BtrfsProvider(mountpoint / "pool")
        provider.prepare()
        load = os.getloadavg()[0]
        print(
            f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, kernel {os.uname().release}; "
            f"btrfs on a {POOL_GIB} GiB sparse loop file; load {load:.2f} at the start",
            flush=True,
        )
        rows = snapshots(provider, mountpoint)
        node = cluster.start().nodes[0]
        figures = starts(provider, node.client)
        print(f"snapshot and clone, ms, medians of {ROUNDS}:")
        print(f"{'data':>8} {'snapshot':>9} {'clone':>9} {'cp -a':>9}")
        for size, snap_ms, clone_ms, copy_ms in rows:
            medians = [statistics.median(x) for x in (snap_ms, clone_ms, copy_ms)]
            print(f"{human(size):>8} " + " ".join(f"{m:>9.1f}" for m in medians))
        ours, theirs = statistics.median(figures["hivemind"]), statistics.median(figures["docker"])
        print(
            f"create + attach + first start, medians of {ROUNDS} rounds of {STARTS}: hivemind {ours * 1000:.0f} ms, "
            f"docker volume create + run {theirs * 1000:.0f} ms: {ours / theirs:.2f}x (target <= 1.5x)"
        )
        print(f"load {os.getloadavg()[0]:.2f} at the end")
    finally:
        cluster.stop()
        loopfs.release(mountpoint, image)
        image.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
