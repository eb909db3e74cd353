"""The systemd units start what `manage.py up` starts: both come from one process table."""

from __future__ import annotations

import configparser
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from hivemind.config import load_config
from hivemind.core import processes
from hivemind.core.supervisor import Supervisor
from tests.conftest import REPO, free_port, wait_for

SHIPPED = REPO / "deploy" / "systemd"


def _parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(text)
    return parser


def test_the_shipped_units_are_what_the_generator_writes(tmp_path):
    """deploy/systemd/ is regenerated with `manage.py systemd_units --output deploy/systemd`."""
    result = subprocess.run(
        [sys.executable, "manage.py", "systemd_units", "--output", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    generated = {path.name: path.read_text() for path in tmp_path.iterdir()}
    shipped = {path.name: path.read_text() for path in SHIPPED.iterdir()}
    assert generated == shipped, "deploy/systemd is stale: run ./manage.py systemd_units --output deploy/systemd"


def test_one_unit_per_process_of_the_table_with_restart_policies():
    units = processes.systemd_units()
    table = [spec.name for spec in processes.platform_processes(config=settings.CONFIG, bindir="/x")]
    assert sorted(units) == sorted([*(f"hivemind-{name}.service" for name in table), "hivemind.target"])
    for name in table:
        unit = _parse(units[f"hivemind-{name}.service"])
        service = unit["Service"]
        assert service["ExecStart"] == f"/opt/hivemind/.venv/bin/python /opt/hivemind/manage.py process {name}"
        assert service["Restart"] == "always"
        assert int(service["RestartSec"]) <= 5
        assert service["EnvironmentFile"] == "/etc/hivemind/hivemind.env"
        # A warm shutdown gets longer than the foreground supervisor gives it, then the rest is killed.
        assert service["KillMode"] == "mixed"
        assert int(service["TimeoutStopSec"]) > Supervisor(env={}).stop_timeout
        assert unit["Unit"]["PartOf"] == "hivemind.target"
        assert int(unit["Unit"]["StartLimitBurst"]) >= 3
        assert int(unit["Unit"]["StartLimitIntervalSec"]) > int(service["RestartSec"]) * int(
            unit["Unit"]["StartLimitBurst"]
        )
        assert unit["Install"]["WantedBy"] == "hivemind.target"
    assert "SupplementaryGroups=docker" in units["hivemind-agent.service"]
    assert _parse(units["hivemind.target"])["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_units(tmp_path):
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (make test-services installs systemd)"
    env_file = tmp_path / "hivemind.env"
    env_file.write_text("HIVEMIND_NODE_NAME=edge-01\n")
    units = processes.systemd_units(
        prefix=str(REPO), venv=str(Path(sys.executable).parent.parent), user="root", env_file=str(env_file)
    )
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in units)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "hivemind" not in result.stderr, result.stderr  # no warning about our units


def test_manage_py_process_runs_the_command_line_of_the_table(subprocess_env, tmp_path):
    """What a unit runs: `manage.py process web` becomes the web process of the table (exec)."""
    port = free_port()
    subprocess_env.update(HIVEMIND_VAR_DIR=str(tmp_path), HIVEMIND_WEB_BIND=f"127.0.0.1:{port}")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "process", "web"],
        cwd=REPO,
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        expected = next(
            spec.argv
            for spec in processes.platform_processes(
                config=load_config(subprocess_env), bindir=str(Path(sys.executable).parent)
            )
            if spec.name == "web"
        )

        def cmdline() -> list[str] | None:
            argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
            return argv if "hivemind.wsgi" in argv else None

        argv = wait_for(cmdline, 60, "manage.py process web to exec gunicorn")
        # gunicorn is a Python script: the kernel runs it through its interpreter.
        assert argv[1:] == expected
        assert f"127.0.0.1:{port}" in argv
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_the_csi_endpoint_runs_beside_the_others_only_when_its_socket_is_set():
    import dataclasses

    names = [spec.name for spec in processes.platform_processes(config=settings.CONFIG, bindir="/x")]
    assert "csi" not in names and settings.CONFIG.csi_socket == ""
    config = dataclasses.replace(settings.CONFIG, csi_socket="/run/hivemind/csi.sock")
    specs = {spec.name: spec.argv for spec in processes.platform_processes(config=config, bindir="/x")}
    assert specs["csi"] == ["/x/python", str(REPO / "manage.py"), "csi"]
    assert list(specs) == ["web", "controller", "agent", "beat", "csi"]


def test_an_unknown_process_name_is_refused():
    result = subprocess.run(
        [sys.executable, "manage.py", "process", "scheduler"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "invalid choice: 'scheduler' (choose from 'web', 'controller', 'agent', 'beat')" in result.stderr
