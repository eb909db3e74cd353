"""A real `Supervisor` in a process of its own, over real child processes, for tests.

The supervisor installs signal handlers, so it must run in a main thread: each test
starts `python -c SCRIPT` with the children and settings as JSON, reads its output and
its state file, and signals it like a terminal or systemd would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, wait_for
from tests.e2e.platform import Output

SCRIPT = """
import json, sys
from pathlib import Path
from hivemind.core.supervisor import Supervisor

config = json.loads(sys.argv[1])
supervisor = Supervisor(env=None, state_file=Path(config["state_file"]), **config["options"])
for name, argv in config["children"]:
    supervisor.add(name, argv)
sys.exit(supervisor.run())
"""

# A child that prints its pid, starts a grandchild in its own process group (as a Celery
# prefork pool does) which prints its pid too, then sleeps.
WITH_POOL = (
    "import os, subprocess, sys, time; print('main', os.getpid(), flush=True); "
    "p = subprocess.Popen([sys.executable, '-c', "
    "'import os, time; print(\"pool\", os.getpid(), flush=True); time.sleep(600)']); time.sleep(600)"
)
SLEEPER = "import os, time; print('up', os.getpid(), flush=True); time.sleep(600)"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class Supervised:
    def __init__(self, tmp_path: Path, children: list[tuple[str, list[str]]], **options):
        self.state_file = tmp_path / "run" / "processes.json"
        config = {"state_file": str(self.state_file), "children": children, "options": options}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, json.dumps(config)],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output = Output(self.process.stdout)
        self.children: set[int] = set()  # every child pid seen, so that a test leaves none behind

    def state(self) -> dict:
        """The state file as the web process reads it (written atomically: never half a file)."""
        with contextlib.suppress(FileNotFoundError):
            processes = json.loads(self.state_file.read_text())["processes"]
            self.children |= {p["pid"] for p in processes.values() if p["pid"]}
            return processes
        return {}

    def running_pid(self, name: str, *, other_than: int | None = None, timeout: float = 30) -> int:
        def found():
            process = self.state().get(name, {})
            pid = process.get("pid")
            return pid if process.get("state") == "running" and pid and pid != other_than else None

        return wait_for(found, timeout, f"{name} to run", interval=0.02)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        try:
            return self.process.wait(timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def kill_children(self) -> None:
        """What a supervisor killed hard left running (each child leads a process group of its own)."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members
