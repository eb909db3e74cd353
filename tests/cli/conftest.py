"""Run the installed `hivemind` command as a real subprocess, with its own config file.

Tests that need a server use the real web process (`web_server`, gunicorn) or pytest-django's
`live_server` (a real HTTP server on a port, in this process) with `transaction=True`, so
rows the test makes are committed and the server's threads see them.

Where each exit code is tested (all through the installed entry point):
0 everywhere; 1 a deploy that cannot be placed and one whose image is missing
(test_cli_apps.py), a failed workflow watched (test_cli_workflows.py); 2 bad flag values
(test_cli_offline.py, test_cli_apps.py); 3 no server on the port (test_cli_offline.py,
test_cli_workflows.py); 4 a wrong token (test_cli_tenants.py, test_cli_workflows.py);
5 a viewer deploys or scales (test_cli_apps.py); 6 an unknown app, tenant or workflow;
7 a taken name and an exceeded quota (test_cli_apps.py), a finished workflow cancelled.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tenants import services
from tests.conftest import REPO, free_port

HIVEMIND = REPO / ".venv" / "bin" / "hivemind"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:  # what a failing assert shows
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


class Cli:
    """`cli("tenant", "ls")` runs `hivemind tenant ls` with this test's config file."""

    def __init__(self, home: Path) -> None:
        self.config = home / ".config" / "hivemind" / "config.yaml"
        self.executable = str(HIVEMIND if HIVEMIND.exists() else shutil.which("hivemind"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        for name in ("DJANGO_SETTINGS_MODULE", "HIVEMIND_SERVER", "HIVEMIND_TOKEN", "HIVEMIND_CONTEXT", "NO_COLOR"):
            env.pop(name, None)
        env.update(HOME=str(home), HIVEMIND_CONFIG=str(self.config))
        self.env = env

    def __call__(self, *args: str, input: str | None = None, env: dict | None = None, **kwargs) -> Result:
        proc = subprocess.run(
            [self.executable, *args],
            input=input,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=60,
            **kwargs,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def on_terminal(self, *args: str, env: dict | None = None) -> Result:
        """Run with stdout on a pseudo-terminal, as a person at a shell would; `out` is what it drew."""
        main, terminal = pty.openpty()
        try:
            proc = subprocess.run(
                [self.executable, *args],
                stdout=terminal,
                stderr=subprocess.PIPE,
                env={**self.env, **(env or {})},
                timeout=120,
            )
            os.close(terminal)
            terminal = -1
            shown = b""
            while chunk := _read(main):
                shown += chunk
        finally:
            os.close(main)
            if terminal != -1:
                os.close(terminal)
        return Result(proc.returncode, shown.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    def saved(self) -> dict:
        return yaml.safe_load(self.config.read_text())

    def write_config(self, data: dict | str) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        self.config.chmod(0o600)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the terminal's other side is closed and drained
        return b""


@pytest.fixture
def cli(tmp_path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home)


def one_error_line(result: Result) -> str:
    """The single `error: ...` line a failing command prints, checked to be exactly one line."""
    lines = result.err.splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("error: "), result
    assert "Traceback" not in result.err
    return lines[0].removeprefix("error: ")


def closed_server() -> str:
    """A URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def login_as(cli: Cli, server: str, world, who: str) -> str:
    """Log `cli` in as `world.users[who]` with a fresh token; the token's plain text."""
    plain = services.api_token_create(user=world.users[who], name="cli")[1]
    result = cli("login", "--server", server, "--token", plain)
    assert result.code == 0, result
    return plain
