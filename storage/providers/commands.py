"""Running the tools behind the node-side providers (btrfs, cp, tar) and streaming through them.

Every failure becomes a StorageError carrying the tool's own message, prefixed with what was
being done, so the workflow step that failed says why in words an operator can act on.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from typing import BinaryIO

from storage.providers.base import StorageError

CHUNK = 1 << 20
PACKAGES = {"btrfs": "btrfs-progs", "mkfs.btrfs": "btrfs-progs", "losetup": "mount", "tar": "tar", "cp": "coreutils"}


def _missing(tool: str) -> StorageError:
    package = PACKAGES.get(tool, tool)
    return StorageError(f"the {tool} command is missing on this node (apt-get install {package})")


def _message(result_stderr: str | bytes, result_stdout: str | bytes, returncode: int, tool: str) -> str:
    for text in (result_stderr, result_stdout):
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        text = text.strip()
        if text:
            return text
    return f"{tool} exited with status {returncode}"


def is_mountpoint(path) -> bool:
    """Whether something is mounted at `path`, from this process's mount table: unlike
    os.path.ismount, this sees a bind mount of a directory of the same file system, and it never
    touches the path itself (on a FUSE file system whose server hangs, that would hang)."""
    target = os.path.abspath(path)
    try:
        with open("/proc/self/mountinfo") as mounts:
            return any(_unescape(line.split()[4]) == target for line in mounts)
    except OSError:
        return False


def loop_devices_of(backing) -> list[str]:
    """The loop devices backed by the file `backing` (as the kernel names it: an absolute path,
    no symlink), in number order. Read from sysfs: `losetup -j` asks every loop device on the
    machine for its status, which stats each one's backing file, so a single device backed by a
    file on a FUSE or network file system that stopped answering (a fenced node's rbd-fuse)
    would hang it, and whoever asked. Nothing here touches any backing file."""
    target = os.path.abspath(backing)
    devices = []
    for entry in os.scandir("/sys/block"):
        if not entry.name.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{entry.name}/loop/backing_file") as file:
                name = file.read().rstrip("\n")
        except OSError:  # not attached, or detached meanwhile
            continue
        if name == target:
            devices.append(entry.name)
    return [f"/dev/{name}" for name in sorted(devices, key=lambda name: int(name[4:]) if name[4:].isdigit() else -1)]


def processes_of(program: str) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every running process whose program is `program`, from /proc's command
    lines only: nothing stats a process's files or mounts (a hung FUSE daemon's stay answerable)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                argv = [arg.decode(errors="replace") for arg in handle.read().split(b"\0")[:-1]]
        except OSError:  # gone meanwhile
            continue
        if argv and os.path.basename(argv[0]) == program:
            found.append((int(entry.name), argv))
    return found


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def run(command: Sequence[str], what: str, *, ok_codes: tuple[int, ...] = (0,), timeout: float | None = None) -> str:
    """Run `command`, return its standard output; StorageError("<what>: <its stderr>") on failure
    (or when it takes longer than `timeout` seconds: e.g. a FUSE file system whose server hangs)."""
    try:
        result = subprocess.run(list(command), check=False, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise _missing(command[0]) from None
    except subprocess.TimeoutExpired:
        raise StorageError(f"{what}: {command[0]} did not finish within {timeout:g} s") from None
    if result.returncode not in ok_codes:
        raise StorageError(f"{what}: {_message(result.stderr, result.stdout, result.returncode, command[0])}")
    return result.stdout


def stream_out(command: Sequence[str], out: BinaryIO, what: str) -> int:
    """Copy the standard output of `command` to `out`; returns the bytes written."""
    if shutil.which(command[0]) is None:
        raise _missing(command[0])
    written = 0
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        try:
            while chunk := process.stdout.read(CHUNK):
                out.write(chunk)
                written += len(chunk)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            process.stdout.close()
        returncode = process.wait()
        if returncode != 0:
            errors.seek(0)
            raise StorageError(f"{what}: {_message(errors.read(), b'', returncode, command[0])}")
    return written


def stream_in(command: Sequence[str], stream: BinaryIO, what: str) -> int:
    """Feed `stream` to the standard input of `command` until it ends (or the command stops
    reading); returns the bytes fed."""
    if shutil.which(command[0]) is None:
        raise _missing(command[0])
    fed = 0
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT)
        assert process.stdin is not None
        try:
            while chunk := stream.read(CHUNK):
                process.stdin.write(chunk)
                fed += len(chunk)
        except BrokenPipeError:
            pass  # the command stopped reading: its status and message say why
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        returncode = process.wait()
        if returncode != 0:
            output.seek(0)
            raise StorageError(f"{what}: {_message(output.read(), b'', returncode, command[0])}")
    return fed
