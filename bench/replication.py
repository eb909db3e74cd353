"""Volume replication: a full transfer of a 1 GiB volume against an incremental one after 64 MiB
of it changed, through the agents' data channel (storage/channel.py), on real btrfs.

Setup: a fresh PostgreSQL database next to the configured one (`<name>_replication`, dropped at
the end); a btrfs file system on a sparse loop file under <var dir>/bench-replication (6 GiB,
removed at the end) holding two pools, `bench-a` on node bench-a and `bench-b` on node bench-b;
bench-b's data endpoint (a DataServer, as its agent runs it) serves on 127.0.0.1 in a thread of
this process, and this process sends as bench-a's `storage.replica_send` step does (a
provider export into channel.send): the stream crosses a loopback TCP connection between two
threads. A 1 GiB volume in bench-a holds one file of 1 GiB of random bytes.

Each of BENCH_ROUNDS (3) rounds, medians reported:
- full: the copy in bench-b removed, a snapshot sent whole (no parent);
- incremental: 64 MiB at a random place of the file overwritten with random bytes, a new
  snapshot sent with the previous one as parent (what every transfer after the first does);
- the same two without the channel, `btrfs send [-p] | btrfs receive` piped by the shell:
  what the channel adds.
Bytes are counted at the channel (the receiver's count; the sender's must be the same). The
last round's copy is checked against the source (SHA-256 of the file).

Environment: BENCH_ROUNDS (3). Needs root (a loop device, btrfs).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt, fresh_database  # noqa: E402 - after the path is set

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MiB = 1 << 20
GiB = 1 << 30
VOLUME = "v1"
CHANGE = 64 * MiB


def _drop(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.strip("/")}"')


def write_random(path: Path, size: int, offset: int = 0) -> None:
    with open(path, "r+b" if path.exists() else "wb") as file:
        file.seek(offset)
        for _ in range(size // MiB):
            file.write(os.urandom(MiB))
        os.fsync(file.fileno())


def digest(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def direct(source, target, snapshot: str, parent: str | None) -> float:
    """`btrfs send [-p parent] snap | btrfs receive dir`, no channel: seconds."""
    command = ["btrfs", "send", "-q"]
    if parent:
        command += ["-p", str(source.root / "snapshots" / VOLUME / parent)]
    command.append(str(source.root / "snapshots" / VOLUME / snapshot))
    into = target.root / "snapshots" / VOLUME
    into.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sender = subprocess.Popen(command, stdout=subprocess.PIPE)
    subprocess.run(["btrfs", "receive", "-e", str(into)], stdin=sender.stdout, check=True, capture_output=True)
    sender.stdout.close()
    if sender.wait() != 0:
        raise SystemExit(f"btrfs send failed for {snapshot}")
    return time.monotonic() - started


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("replication.py needs root (a loop device and btrfs)")
    url = fresh_database("replication", "bench/replication.py")
    os.environ["HIVEMIND_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from hivemind.nodes.models import Node
    from storage import channel, loopfs
    from storage.models import StoragePool
    from storage.replication import replication_name
    from storage.steps import provider_of

    if reason := loopfs.btrfs_available():
        raise SystemExit(f"no btrfs here: {reason}")
    base_dir = settings.VAR_DIR / "bench-replication"
    image, mountpoint = base_dir / "pool.img", base_dir / "mnt"
    server = None
    try:
        call_command("migrate", verbosity=0)
        base_dir.mkdir(parents=True, exist_ok=True)
        fs = loopfs.ensure_btrfs(image, 6 * GiB, mountpoint)
        pools = {}
        for name in ("bench-a", "bench-b"):
            node = Node.objects.create(name=name, address="127.0.0.1", status=Node.Status.READY)
            pools[name] = StoragePool.objects.create(
                name=name, provider="btrfs", node=node, path=str(fs.mountpoint / name)
            )
            provider_of(pools[name]).prepare()
        source, target = provider_of(pools["bench-a"]), provider_of(pools["bench-b"])
        direct_dir = fs.mountpoint / "direct"
        direct_target = provider_of(
            StoragePool(name="direct", provider="btrfs", node=pools["bench-b"].node, path=str(direct_dir))
        )
        direct_target.prepare()
        server = channel.DataServer("bench-b", "127.0.0.1", 0)
        channel.register("bench-b", server.url)

        source.create(VOLUME, 2 * GiB)
        data = source.path(VOLUME) / "data"
        started = time.monotonic()
        write_random(data, GiB)
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; 1 GiB of random bytes written "
              f"in {time.monotonic() - started:.1f} s; {ROUNDS} rounds, medians")  # fmt: skip

        def send(snapshot: str, parent: str | None) -> dict:
            return channel.send(
                server.url, pool=pools["bench-b"].pk, volume=VOLUME, snapshot=snapshot, parent=parent,
                export=lambda out: source.export(VOLUME, snapshot, out, parent=parent),
            )  # fmt: skip

        figures: dict[str, list[float]] = {key: [] for key in (
            "full_bytes", "full_s", "inc_bytes", "inc_s", "direct_full_s", "direct_inc_s", "snapshot_s")}  # fmt: skip
        number = 0
        for round_ in range(1, ROUNDS + 1):
            for provider in (target, direct_target):
                provider.delete(VOLUME)
            for old in source.snapshots(VOLUME):
                source.delete_snapshot(VOLUME, old)
            number += 1
            first = replication_name(number)
            source.snapshot(VOLUME, first)
            subprocess.run(["sync"], check=True)
            full = send(first, None)
            assert full["sent"] == full["received"], full
            figures["full_bytes"].append(full["received"])
            figures["full_s"].append(full["seconds"])
            figures["direct_full_s"].append(direct(source, direct_target, first, None))

            offset = random.randrange(0, (GiB - CHANGE) // MiB) * MiB
            write_random(data, CHANGE, offset)
            number += 1
            second = replication_name(number)
            started = time.monotonic()
            source.snapshot(VOLUME, second)
            figures["snapshot_s"].append(time.monotonic() - started)
            subprocess.run(["sync"], check=True)
            incremental = send(second, first)
            assert incremental["sent"] == incremental["received"], incremental
            figures["inc_bytes"].append(incremental["received"])
            figures["inc_s"].append(incremental["seconds"])
            figures["direct_inc_s"].append(direct(source, direct_target, second, first))
            print(
                f"round {round_}: full {full['received'] / MiB:.1f} MiB in {full['seconds']:.2f} s "
                f"(direct {figures['direct_full_s'][-1]:.2f} s); 64 MiB changed at {offset // MiB} MiB: "
                f"{incremental['received'] / MiB:.2f} MiB in {incremental['seconds']:.2f} s "
                f"(direct {figures['direct_inc_s'][-1]:.2f} s)",
                flush=True,
            )
        copy = target.root / "snapshots" / VOLUME / second / "data"
        same = digest(copy) == digest(source.root / "snapshots" / VOLUME / second / "data")
        m = {key: statistics.median(values) for key, values in figures.items()}
        print(f"full transfer of the 1 GiB volume: {m['full_bytes'] / MiB:.1f} MiB at the channel, "
              f"{m['full_s']:.2f} s [{fmt(figures['full_s'])}] ({m['full_bytes'] / MiB / m['full_s']:.0f} MiB/s); "
              f"btrfs send | receive without the channel {m['direct_full_s']:.2f} s")  # fmt: skip
        print(f"after changing 64 MiB: {m['inc_bytes'] / MiB:.2f} MiB at the channel "
              f"({m['inc_bytes'] / CHANGE:.3f} x the change; target <= 1.2), {m['inc_s']:.2f} s "
              f"[{fmt(figures['inc_s'])}]; without the channel {m['direct_inc_s']:.2f} s; "
              f"{m['full_s'] / m['inc_s']:.1f}x faster than the full transfer")  # fmt: skip
        print(f"snapshot of the volume: {m['snapshot_s'] * 1000:.0f} ms; the copy equals the source: {same}")
        if m["inc_bytes"] > 1.2 * CHANGE or not same:
            raise SystemExit("replication: the incremental transfer is over 1.2x the change, or the copy differs")
    finally:
        if server is not None:
            server.stop()
        connections.close_all()
        loopfs.release(mountpoint, image)
        shutil.rmtree(base_dir, ignore_errors=True)
        _drop(url)


if __name__ == "__main__":
    main()
