"""The platform's processes: one table of names and command lines, and the state file of their supervisor.

`platform_processes()` is the only place that says how web, controller, agent and beat are
started. `manage.py up` supervises them from it, `manage.py process NAME` execs one of them
(what the systemd units run), and `manage.py systemd_units` writes the units from it, so the
foreground supervisor and production can never start different things.

While `manage.py up` runs, its supervisor keeps `$HIVEMIND_VAR_DIR/run/processes.json`
current (written atomically): per process its state, pid, restart count and last exit. The
web process reads it for `/api/v1/health/` and for the `hivemind_process_*` metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

ROLES = ("web", "controller", "agent", "beat")  # the systemd units; `csi` runs only when HIVEMIND_CSI_SOCKET is set
SUMMARIES = {  # one line per process: what it does (systemd's Description)
    "web": "Hivemind web: admin, dashboard, REST API, /metrics",
    "controller": "Hivemind controller: cluster-level workflow steps (Celery worker on the control queue)",
    "agent": "Hivemind agent: this node's containers, volumes and networks (Celery worker on node.<name>)",
    "beat": "Hivemind beat: heartbeat checks, reconcilers and scheduled work (Celery beat)",
}
STATE_FILE = Path("run") / "processes.json"

# Process states in the state file.
RUNNING = "running"
RESTARTING = "restarting"  # exited unexpectedly, waiting for its restart delay
CRASH_LOOPING = "crash-looping"  # exited too often in a row just after starting: given up on
STOPPED = "stopped"


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]


def platform_processes(*, config, bindir: str, control_queue: str = "control") -> list[ProcessSpec]:
    """Every process of one machine, in start order: web, controller, this node's agent, beat,
    and the CSI endpoint when HIVEMIND_CSI_SOCKET names its socket.

    `config` is a hivemind.config.Config (web bind, threads, concurrency, node name);
    `bindir` the virtualenv's bin directory holding gunicorn and celery.
    """
    node = config.node_name
    celery = [os.path.join(bindir, "celery"), "-A", "hivemind"]
    if config.log_format == "json":
        celery.append("--quiet")  # no banner: every line a JSON object
    worker = ["--concurrency", str(config.worker_concurrency), "-l", "INFO"]
    specs = [
        ProcessSpec(
            "web",
            [
                os.path.join(bindir, "gunicorn"),
                "hivemind.wsgi",
                "--config",  # its own log lines in HIVEMIND_LOG_FORMAT
                "python:hivemind.core.gunicorn_conf",
                "--bind",
                config.web_bind,
                "--workers",
                str(config.web_workers),
                "--threads",
                str(config.web_threads),
                "--access-logfile",
                "-",
                "--graceful-timeout",
                "10",
                "--no-control-socket",
            ],
        ),
        ProcessSpec(
            "controller",
            [*celery, "worker", "-Q", control_queue, "-n", "controller@%h", *worker],
        ),
        ProcessSpec(
            "agent",
            [*celery, "worker", "-Q", f"node.{node}", "-n", f"agent.{node}@%h", *worker],
        ),
        ProcessSpec(
            "beat",
            [*celery, "beat", "-l", "INFO", "--pidfile=", "-S", "django_celery_beat.schedulers:DatabaseScheduler"],
        ),
    ]
    if config.csi_socket:
        manage = str(Path(__file__).resolve().parents[2] / "manage.py")
        specs.append(ProcessSpec("csi", [os.path.join(bindir, "python"), manage, "csi"]))
    return specs


def process_spec(name: str, *, config, bindir: str, control_queue: str = "control") -> ProcessSpec:
    for spec in platform_processes(config=config, bindir=bindir, control_queue=control_queue):
        if spec.name == name:
            return spec
    raise KeyError(f"no platform process named {name!r}; expected one of {', '.join(ROLES)}")


# --- The supervisor's state file -----------------------------------------------------------


def state_path(var_dir: Path) -> Path:
    return Path(var_dir) / STATE_FILE


def write_state(path: Path, state: dict) -> None:
    """Replace the file in one step: a reader sees the old content or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".processes.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def process_starttime(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot), or None when there is none (or a zombie).

    A pid and its start time name one process: a pid alone may have been reused since.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def same_process(pid, starttime) -> bool:
    return isinstance(pid, int) and pid > 0 and starttime is not None and process_starttime(pid) == starttime


def _load(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def read_state(path: Path) -> dict | None:
    """The supervisor's last word, or None when no supervisor runs (no file, or one left by a dead one)."""
    state = _load(path)
    if state is None:
        return None
    supervisor = state.get("supervisor", {})
    return state if same_process(supervisor.get("pid"), supervisor.get("starttime")) else None


def running_supervisor(path: Path) -> int | None:
    """The pid of the supervisor that keeps `path` current, if it still runs."""
    state = read_state(path)
    return None if state is None else state["supervisor"]["pid"]


def left_running(path: Path) -> dict[str, dict]:
    """Processes a supervisor that died without stopping them (SIGKILL, OOM) left running, by name."""
    state = _load(path)
    if state is None or read_state(path) is not None:
        return {}
    return {
        name: entry
        for name, entry in state.get("processes", {}).items()
        if same_process(entry.get("pid"), entry.get("starttime"))
    }


class ProcessStateCollector:
    """`hivemind_process_restarts_total` and `hivemind_process_up` per supervised process.

    Read from the state file at each scrape, so the web process reports restarts of every
    process, its own included (a restarted web process cannot count its own deaths).
    """

    def __init__(self, path: Path | None = None):
        self._path = path

    def _state_path(self) -> Path:
        if self._path is not None:
            return self._path
        from django.conf import settings

        return state_path(settings.VAR_DIR)

    def _families(self) -> tuple[CounterMetricFamily, GaugeMetricFamily]:
        restarts = CounterMetricFamily(
            "hivemind_process_restarts",
            "Times the supervisor restarted a platform process after it exited unexpectedly.",
            labels=["process"],
        )
        up = GaugeMetricFamily(
            "hivemind_process_up",
            "1 while a supervised platform process runs, 0 while it waits for a restart or was given up on.",
            labels=["process"],
        )
        return restarts, up

    def describe(self) -> Iterable:
        return self._families()

    def collect(self) -> Iterator:
        state = read_state(self._state_path())
        if state is None:
            return
        restarts, up = self._families()
        for name, process in state.get("processes", {}).items():
            restarts.add_metric([name], float(process.get("restarts", 0)))
            up.add_metric([name], 1.0 if process.get("state") == RUNNING else 0.0)
        yield restarts
        yield up


# --- systemd units -------------------------------------------------------------------------

UNIT_PREFIX = "hivemind-"
TARGET = "hivemind.target"
STOP_TIMEOUT = 30  # seconds: above a Celery worker's warm shutdown of a step (the supervisor allows 20)


def systemd_units(
    *,
    prefix: str = "/opt/hivemind",
    venv: str | None = None,
    user: str = "hivemind",
    env_file: str = "/etc/hivemind/hivemind.env",
    var_dir: str = "/var/lib/hivemind",
) -> dict[str, str]:
    """The unit files for every process of `platform_processes()`, plus hivemind.target; by file name.

    Each unit runs `manage.py process NAME`, which execs the command line of the table with
    the HIVEMIND_* settings of `env_file`: the units carry no command line of their own.
    """
    venv = venv or f"{prefix}/.venv"
    units: dict[str, str] = {}
    for role in ROLES:
        summary = SUMMARIES[role]
        after = "network-online.target postgresql.service redis-server.service"
        extra = ""
        if role == "agent":
            after += " docker.service"
            extra = "# The agent drives Docker: its socket belongs to the docker group.\nSupplementaryGroups=docker\n"
        units[f"{UNIT_PREFIX}{role}.service"] = (
            f"# Generated by `manage.py systemd_units` from hivemind/core/processes.py; do not edit by hand.\n"
            f"[Unit]\n"
            f"Description={summary.replace('%', '%%')}\n"
            f"Documentation=file://{prefix}/docs/operations.md\n"
            f"After={after}\n"
            f"Wants=network-online.target\n"
            f"PartOf={TARGET}\n"
            f"# Five starts within two minutes is a crash loop: systemd gives up on this unit (state failed).\n"
            f"StartLimitIntervalSec=120\n"
            f"StartLimitBurst=5\n"
            f"\n"
            f"[Service]\n"
            f"Type=exec\n"
            f"User={user}\n"
            f"Group={user}\n"
            f"{extra}"
            f"WorkingDirectory={prefix}\n"
            f"Environment=HIVEMIND_VAR_DIR={var_dir}\n"
            f"Environment=PYTHONUNBUFFERED=1\n"
            f"EnvironmentFile={env_file}\n"
            f"StateDirectory={Path(var_dir).name}\n"
            f"ExecStart={venv}/bin/python {prefix}/manage.py process {role}\n"
            f"Restart=always\n"
            f"RestartSec=2\n"
            f"# SIGTERM to the main process only (a warm shutdown lets running steps finish); what is\n"
            f"# left of the group after TimeoutStopSec is killed.\n"
            f"KillMode=mixed\n"
            f"TimeoutStopSec={STOP_TIMEOUT}\n"
            f"SyslogIdentifier={UNIT_PREFIX}{role}\n"
            f"\n"
            f"[Install]\n"
            f"WantedBy={TARGET}\n"
        )
    units[TARGET] = (
        "# Generated by `manage.py systemd_units` from hivemind/core/processes.py; do not edit by hand.\n"
        "[Unit]\n"
        "Description=Hivemind: the platform's processes on this machine\n"
        f"Documentation=file://{prefix}/docs/operations.md\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    return units
