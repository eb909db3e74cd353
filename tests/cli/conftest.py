"""Run the installed `hivemind` command as a real subprocess, with its own config file.

Tests that need a server use pytest-django's `live_server` (a real HTTP server on a port,
in this process) with `transaction=True`, so rows the test makes are committed and the
server's threads see them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

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

    def saved(self) -> dict:
        return yaml.safe_load(self.config.read_text())

    def write_config(self, data: dict | str) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        self.config.chmod(0o600)


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
