"""A btrfs file system on a sparse loop file: a storage pool on a machine without a spare disk.

Loop devices are shared with everything else on the machine, so this module only ever takes a
free one (`losetup -f --show`) and detaches only the device backing its own image file; it never
touches another loop device. Everything is idempotent: `ensure_btrfs` adopts a mount (or a loop
device of its image left by a crash) that is already there, `release` of what is gone succeeds.

Size the file at least twice the data it will hold (btrfs duplicates metadata); the file is
sparse, so it only takes the space its data uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from storage.providers.base import StorageError
from storage.providers.commands import loop_devices_of, run

MIN_SIZE = 256 << 20  # mkfs.btrfs refuses much smaller devices (its minimum is ~114 MiB)


@dataclass(frozen=True)
class LoopFs:
    image: Path
    mountpoint: Path
    device: str  # /dev/loopN
    created: bool  # this call made the file system (False: adopted one already there)


def btrfs_available() -> str | None:
    """None when this node can make btrfs pools on loop files, else the reason it cannot."""
    if os.geteuid() != 0:
        return "btrfs pools need root (loop devices, mount, quota groups)"
    for tool, package in (("btrfs", "btrfs-progs"), ("mkfs.btrfs", "btrfs-progs"), ("losetup", "mount")):
        if shutil.which(tool) is None:
            return f"the {tool} command is missing (apt-get install {package})"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError as error:
        return f"cannot read /proc/filesystems: {error}"
    if not any(line.split()[-1:] == ["btrfs"] for line in filesystems.splitlines()):
        return "the kernel has no btrfs (not in /proc/filesystems)"
    if not Path("/dev/loop-control").exists():
        return "the kernel has no loop devices (/dev/loop-control is missing)"
    return None


def _mount_of(mountpoint: Path) -> tuple[str, str] | None:
    """(source device, file system type) mounted exactly at `mountpoint`, or None."""
    result = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--mountpoint", str(mountpoint)],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not result.stdout.strip():
        return None
    source, fstype = result.stdout.split()[:2]
    return source, fstype


def _devices_of(image: Path) -> list[str]:
    """The loop devices backed by `image` (from sysfs, never hanging on another device's file)."""
    if not image.exists():
        return []
    return loop_devices_of(image.resolve())


def _fstype(device: str) -> str:
    result = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", device], check=False, capture_output=True, text=True
    )
    return result.stdout.strip()


def ensure_btrfs(image: Path, size: int, mountpoint: Path) -> LoopFs:
    """A btrfs file system on the sparse file `image` (made with `size` bytes if missing),
    mounted at `mountpoint`. Adopts a mount already there (it must be this image's btrfs)."""
    image, mountpoint = Path(image).absolute(), Path(mountpoint).absolute()
    mounted = _mount_of(mountpoint)
    if mounted is not None:
        source, fstype = mounted
        if fstype != "btrfs":
            raise StorageError(f"{mountpoint} already holds a {fstype} file system ({source}), not btrfs")
        if source not in _devices_of(image):
            raise StorageError(f"{mountpoint} already holds {source}, not the loop device of {image}")
        return LoopFs(image, mountpoint, source, created=False)

    reason = btrfs_available()
    if reason is not None:
        raise StorageError(f"cannot make a btrfs pool on {image}: {reason}")
    if size < MIN_SIZE:
        raise StorageError(f"a btrfs loop file needs at least {MIN_SIZE} bytes, not {size} ({image})")
    image.parent.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if not image.exists():
        with open(image, "wb") as file:
            file.truncate(size)
    # A loop device of this image left behind by a crash is ours: reuse it rather than
    # attaching the file twice (two devices on one btrfs image corrupt it).
    existing = _devices_of(image)
    attached = not existing
    device = existing[0] if existing else run(["losetup", "-f", "--show", str(image)], f"attaching {image}").strip()
    try:
        fstype = _fstype(device)
        created = False
        if not fstype:
            run(["mkfs.btrfs", "-q", device], f"making a btrfs file system on {device} ({image})")
            created = True
        elif fstype != "btrfs":
            raise StorageError(f"{image} holds a {fstype} file system, not btrfs")
        run(["mount", "-t", "btrfs", device, str(mountpoint)], f"mounting {device} ({image}) at {mountpoint}")
    except BaseException:
        if attached:
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
        raise
    return LoopFs(image, mountpoint, device, created=created)


def release(mountpoint: Path, image: Path | None = None) -> None:
    """Unmount `mountpoint` and detach the loop device it was on (and, given `image`, any loop
    device still backed by it). The image file stays."""
    mountpoint = Path(mountpoint).absolute()
    devices: list[str] = []
    mounted = _mount_of(mountpoint)
    if mounted is not None:
        source = mounted[0]
        run(["umount", str(mountpoint)], f"unmounting {mountpoint}")
        if source.startswith("/dev/loop"):
            devices.append(source)
    if image is not None:
        devices += [device for device in _devices_of(Path(image).absolute()) if device not in devices]
    for device in devices:
        result = subprocess.run(["losetup", "-d", device], check=False, capture_output=True, text=True)
        # Gone already (or autocleared on umount) is fine; anything else is not.
        if result.returncode != 0 and Path("/sys/block", Path(device).name, "loop").exists():
            raise StorageError(f"detaching {device} ({mountpoint}): {result.stderr.strip()}")
