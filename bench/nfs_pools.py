"""A managed NFS pool (storage/providers/nfs.py) as its node serves it: how long nfs-ganesha
takes to serve, how long a volume's export takes to reach a client after its access list
changes (the SIGHUP reload), and sequential throughput through the NFS protocol against the
same bytes written to and read from the pool's directory directly.

Setup: a managed pool on a plain directory under <var dir>/bench-nfs, served by the ganesha
its provider starts (NFSv4.1, 127.0.0.1, a free port); the client is nfs-rs from Python (the
build machines have no kernel NFS client), so the protocol figures include Python's side.

1. Start: `prepare` (ganesha forked, configured, "NFS SERVER INITIALIZED"), BENCH_ROUNDS times.
2. Export: BENCH_VOLUMES volumes per round, each created then opened to 127.0.0.1 by
   `export_to` (config rewritten, SIGHUP, "Reread exports complete"), until an nfs-rs client
   opens it; medians.
3. Throughput, BENCH_ROUNDS rounds alternating which goes first: write BENCH_MIB MiB in 1 MiB
   writes (fsync'd on the directory side, committed on the protocol side by closing the file),
   then read it back after dropping the page cache; MiB/s, the ratio NFS / directory.

Everything it made goes at the end (ganesha, the directory). Environment: BENCH_ROUNDS (3),
BENCH_VOLUMES (5), BENCH_MIB (256). Needs root, ganesha.nfsd with its VFS backend, nfs-rs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt, free_port  # noqa: E402 - after the path is set

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
VOLUMES = int(os.environ.get("BENCH_VOLUMES", "5"))
MIB = int(os.environ.get("BENCH_MIB", "256"))
CHUNK = os.urandom(1 << 20)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")


def client(port: int, handle: str):
    import nfs_rs

    return nfs_rs.Client.connect(f"nfs://127.0.0.1:{port}/hivemind/{handle}?version=4.1", connect_timeout=5)


def wait_open(port: int, handle: str, timeout: float = 10) -> None:
    import nfs_rs

    deadline = time.monotonic() + timeout
    while True:
        try:
            client(port, handle).close()
            return
        except nfs_rs.NfsError:
            if time.monotonic() > deadline:
                raise SystemExit(f"volume {handle}'s export did not open within {timeout} s") from None
            time.sleep(0.005)


def direct(path: Path) -> tuple[float, float]:
    started = time.perf_counter()
    with open(path, "wb") as out:
        for _ in range(MIB):
            out.write(CHUNK)
        out.flush()
        os.fsync(out.fileno())
    write = MIB / (time.perf_counter() - started)
    drop_caches()
    started = time.perf_counter()
    with open(path, "rb") as source:
        while source.read(1 << 20):
            pass
    read = MIB / (time.perf_counter() - started)
    path.unlink()
    return write, read


def protocol(port: int, handle: str) -> tuple[float, float]:
    with client(port, handle) as nfs:
        started = time.perf_counter()
        with nfs.open("bench.bin", "wb") as out:
            for _ in range(MIB):
                out.write(CHUNK)
        write = MIB / (time.perf_counter() - started)
        drop_caches()
        started = time.perf_counter()
        with nfs.open("bench.bin", "rb") as source:
            while source.read(1 << 20):
                pass
        read = MIB / (time.perf_counter() - started)
        nfs.remove("bench.bin")
    return write, read


def main() -> None:
    from storage.providers import registry

    base = Path(os.environ.get("HIVEMIND_VAR_DIR", REPO / "var")) / "bench-nfs"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    port = free_port()
    options = registry.get("nfs").validate_options({"mode": "managed", "address": "127.0.0.1", "port": port}, {})
    provider = registry.instance("nfs", base / "pool", options)
    starts, exports = [], []
    speeds = {"directory": ([], []), "nfs": ([], [])}
    try:
        for round_ in range(ROUNDS):
            provider.stop_server(timeout=0)
            began = time.perf_counter()
            provider.prepare()
            starts.append(time.perf_counter() - began)
            for number in range(VOLUMES):
                handle = f"v{round_ * VOLUMES + number + 1}"
                provider.create(handle, 1 << 30)
                began = time.perf_counter()
                provider.export_to({h: ["127.0.0.1"] for h in provider.exports()})
                wait_open(port, handle)
                exports.append(time.perf_counter() - began)
            handle = f"v{round_ * VOLUMES + 1}"
            ways = [("directory", lambda h=handle: direct(provider.path(h) / "bench.bin")),
                    ("nfs", lambda h=handle: protocol(port, h))]  # fmt: skip
            for name, run in ways if round_ % 2 == 0 else reversed(ways):
                write, read = run()
                speeds[name][0].append(write)
                speeds[name][1].append(read)
    finally:
        provider.stop_server(timeout=0)
        shutil.rmtree(base, ignore_errors=True)

    print(f"ganesha start to serving (s): {fmt(starts)}  median {statistics.median(starts):.3f}")
    print(f"export reachable after its access list changed (s): median {statistics.median(exports):.3f}, "
          f"max {max(exports):.3f} over {len(exports)}")  # fmt: skip
    for label, index in (("write", 0), ("cold read", 1)):
        d, n = statistics.median(speeds["directory"][index]), statistics.median(speeds["nfs"][index])
        print(f"{label} {MIB} MiB: directory {d:.0f} MiB/s, NFS (nfs-rs, loopback) {n:.0f} MiB/s, "
              f"ratio {n / d:.2f}  [nfs rounds: {fmt(speeds['nfs'][index])}]")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    main()
