"""Backups: Hivemind's repository format (backups/repository/) against restic, side by side in
one run, on the same generated data and the same local disk.

Data (BENCH_BACKUP_MB, 500 by default), under <var dir>/bench-backups: half random bytes (one
file of a fifth of that half, the rest in 10 MiB files and 64 KiB files), half compressible
text (lines of words drawn at random from a 256-word vocabulary, ~3x with zstd), in files of
8 MiB and 256 KiB. Then, for each tool, one after the other:

1. full backup into an empty repository (restic: `init --repository-version 2`, compression on,
   as ours), time and bytes in the repository directory;
2. BENCH_EDITS (200) scattered small edits (4 KiB of new random bytes each, at random places
   in random files, the same edits for both), incremental backup (ours with the full backup as
   parent: unchanged files are not read again, as restic does with its parent snapshot): time
   and new bytes stored;
3. restore of the latest snapshot into an empty directory (ours checked byte-identical);
4. verify reading every chunk: `repo.verify(read_data=True)` against `restic check --read-data`.

Then ours alone to an S3 protocol peer (moto_server, started here as the tests start it, on
loopback): a full backup of the same data into an empty bucket prefix and a restore from it,
in MiB/s of source data. moto keeps objects in its own Python process, so this measures the
path through boto3 and an S3 server on this machine, not a production object store.

restic gets RESTIC_PASSWORD and the page cache is warm for both (the data is read by the
generator, then by each tool in turn). Our repository runs with its defaults (FastCDC 512 KiB /
1 MiB / 8 MiB — restic's own chunk sizes —, zstd 3, 16 MiB packs, min(4, cores) workers).
Targets (issue 16): each time <= 1.0x restic's, incremental stored bytes <= restic's.

Environment: BENCH_BACKUP_MB (500), BENCH_EDITS (200), BENCH_KEEP (unset: the work directory is
removed at the end). Needs `restic` on PATH (Debian package restic).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backups.repository import Repository  # noqa: E402 - after the path is set
from backups.stores import LocalStore  # noqa: E402

SIZE = int(os.environ.get("BENCH_BACKUP_MB", "500")) << 20
EDITS = int(os.environ.get("BENCH_EDITS", "200"))
VAR = Path(os.environ.get("HIVEMIND_VAR_DIR", REPO / "var"))
WORK = VAR / "bench-backups"
PASSWORD = "bench-only-password"  # noqa: S105 - a throwaway repository of generated data
VOCABULARY = [bytes(random.Random(i).choices(b"abcdefghijklmnopqrstuvwxyz", k=3 + i % 9)) + b" " for i in range(256)]


def text(rng: random.Random, size: int) -> bytes:
    out, total = [], 0
    while total < size:
        words = rng.randbytes(12)
        line = b"".join(VOCABULARY[b] for b in words) + b"\n"
        out.append(line)
        total += len(line)
    return b"".join(out)[:size]


def generate(root: Path) -> None:
    rng = random.Random(16)
    half = SIZE // 2
    (root / "random" / "small").mkdir(parents=True)
    (root / "text" / "small").mkdir(parents=True)
    big = half // 5
    (root / "random" / "big.img").write_bytes(os.urandom(big))
    left = half - big
    for i in range(left * 3 // 4 // (10 << 20)):
        (root / "random" / f"file-{i:03}.bin").write_bytes(os.urandom(10 << 20))
    for i in range(left // 4 // (64 << 10)):
        (root / "random" / "small" / f"{i:05}.bin").write_bytes(os.urandom(64 << 10))
    for i in range(half * 3 // 4 // (8 << 20)):
        (root / "text" / f"log-{i:03}.txt").write_bytes(text(rng, 8 << 20))
    for i in range(half // 4 // (256 << 10)):
        (root / "text" / "small" / f"{i:05}.txt").write_bytes(text(rng, 256 << 10))


def edit(root: Path, rng: random.Random) -> int:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    changed = 0
    for _ in range(EDITS):
        path = rng.choice(files)
        size = path.stat().st_size
        with open(path, "r+b") as out:
            out.seek(rng.randrange(max(1, size - 4096)))
            out.write(rng.randbytes(4096))
        changed += 4096
    return changed


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def restic(*args: str, repo: Path) -> None:
    env = {
        **os.environ,
        "RESTIC_PASSWORD": PASSWORD,
        "RESTIC_REPOSITORY": str(repo),
        "RESTIC_CACHE_DIR": str(WORK / "restic-cache"),
    }
    done = subprocess.run(["restic", "--quiet", *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"restic {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def s3_figures(data: Path) -> tuple[float, float]:
    """Seconds for a full backup of `data` into moto's S3 and for its restore (checked)."""
    from backups.stores.registry import open_store
    from tests.backups.peers import start_moto

    peer = start_moto(WORK / "moto")
    try:
        store = open_store("s3", {**peer.config, "prefix": "bench"}, peer.secrets)
        repo = Repository.init(store, os.urandom(32))
        t_backup, result = timed(lambda: repo.backup_tree(data))
        t_restore, _ = timed(lambda: repo.restore(result.id, WORK / "restore-s3"))
        if digest(WORK / "restore-s3") != digest(data):
            raise SystemExit("the tree restored from S3 differs from the data")
        return t_backup, t_restore
    finally:
        peer.stop()


def main() -> None:
    if not shutil.which("restic"):
        raise SystemExit("bench/backups.py needs restic on PATH (apt-get install restic)")
    shutil.rmtree(WORK, ignore_errors=True)
    data, ours, theirs = WORK / "data", WORK / "hivemind", WORK / "restic"
    data.mkdir(parents=True)
    try:
        print(f"generating {SIZE >> 20} MiB (half random, half text) in {data}", flush=True)
        generate(data)
        total = du(data)
        figures: dict[str, tuple[float, float]] = {}
        sizes: dict[str, tuple[int, int]] = {}

        repo = Repository.init(LocalStore(ours), os.urandom(32))
        restic("init", "--repository-version", "2", repo=theirs)
        base_ours, base_theirs = du(ours), du(theirs)
        t_ours, full = timed(lambda: repo.backup_tree(data))
        t_theirs, _ = timed(lambda: restic("backup", str(data), repo=theirs))
        figures["full backup"] = (t_ours, t_theirs)
        sizes["full backup"] = (du(ours) - base_ours, du(theirs) - base_theirs)

        changed = edit(data, random.Random(17))
        before_ours, before_theirs = du(ours), du(theirs)
        t_ours, incremental = timed(lambda: repo.backup_tree(data, parent=full.id))
        t_theirs, _ = timed(lambda: restic("backup", str(data), repo=theirs))
        figures["incremental"] = (t_ours, t_theirs)
        sizes["incremental"] = (du(ours) - before_ours, du(theirs) - before_theirs)

        t_ours, _ = timed(lambda: repo.restore(incremental.id, WORK / "restore-hivemind"))
        t_theirs, _ = timed(lambda: restic("restore", "latest", "--target", str(WORK / "restore-restic"), repo=theirs))
        figures["restore"] = (t_ours, t_theirs)
        if digest(WORK / "restore-hivemind") != digest(data):
            raise SystemExit("the restored tree differs from the data")

        t_ours, report = timed(lambda: repo.verify(read_data=True))
        t_theirs, _ = timed(lambda: restic("check", "--read-data", repo=theirs))
        figures["verify read-data"] = (t_ours, t_theirs)
        if not report.ok:
            raise SystemExit(f"verify found damage: {report.damaged}")

        s3 = s3_figures(data)

        mib = total / (1 << 20)
        print(f"{mib:.0f} MiB, {full.files} files; {EDITS} edits of 4 KiB ({changed >> 10} KiB changed)")
        print(f"{'':18} {'hivemind':>10} {'restic':>10} {'ratio':>7}")
        for name, (a, b) in figures.items():
            rate = f"  ({mib / a:.0f} vs {mib / b:.0f} MiB/s)" if name != "incremental" else ""
            print(f"{name:18} {a:9.2f}s {b:9.2f}s {a / b:6.2f}x{rate}")
        for name, (a, b) in sizes.items():
            print(f"{name + ' stored':18} {a / (1 << 20):7.1f}MiB {b / (1 << 20):7.1f}MiB {a / b:6.2f}x")
        backup_s, restore_s = s3
        print(f"to the S3 peer (moto): full backup {backup_s:.2f}s ({mib / backup_s:.0f} MiB/s), "
              f"restore {restore_s:.2f}s ({mib / restore_s:.0f} MiB/s)")  # fmt: skip
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
