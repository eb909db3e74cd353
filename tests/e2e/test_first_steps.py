"""README's first steps, as a new user walks them: `make run` prints the admin's password; with
the virtualenv's `bin` on PATH, `hivemind login --username admin` (the password through
--password-stdin) gets the CLI its token; `hivemind app deploy` runs hivemind/busybox, and
`hivemind app ls` and `info` show it running. No step uses a browser, a session or code.

How `make run` is started, waited for and stopped is test_make_run.py's; its helpers are
imported from there rather than copied.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest
import requests
import yaml

from tests.conftest import REPO, free_port
from tests.e2e.test_make_run import Output, _alive, _descendants

pytestmark = pytest.mark.e2e


def test_first_steps_from_make_run_to_a_running_app(subprocess_env, tmp_path, docker_daemon):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    subprocess_env.update(
        HIVEMIND_VAR_DIR=str(tmp_path / "var"),
        HIVEMIND_DATABASE_URL="",  # the embedded default: SQLite under the var dir
        HIVEMIND_REDIS_URL="redis://127.0.0.1:6379/13",
        HIVEMIND_WEB_BIND=f"127.0.0.1:{port}",
        HIVEMIND_NODE_NAME="firststeps",
        HIVEMIND_DOCKER_HOST=docker_daemon.endpoint,
    )
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=REPO,
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = Output(process.stdout)

    # The user's shell: `export PATH="$PWD/.venv/bin:$PATH"`, a home of their own.
    home = tmp_path / "home"
    home.mkdir()
    config = home / ".config" / "hivemind" / "config.yaml"
    shell = {k: v for k, v in os.environ.items() if k.startswith(("LANG", "LC_", "TERM"))}
    shell.update(
        HOME=str(home),
        PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        HIVEMIND_CONFIG=str(config),
    )

    def hivemind(*args: str, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["hivemind", *args], input=stdin, capture_output=True, text=True, env=shell, cwd=home, timeout=timeout
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    pids: set[int] = set()
    try:
        password = output.wait_for(r"password: (\S+)", timeout=240).group(1)
        output.wait_for(rf"dashboard\s+{re.escape(base)}/", timeout=30)
        output.wait_for(r"agent\.firststeps@\S+ ready", timeout=120)
        output.wait_for(r"controller@\S+ ready", timeout=120)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/api/v1/health/", timeout=10).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the health endpoint never turned green"
            time.sleep(0.5)

        login = hivemind("login", "--server", base, "--username", "admin", "--password-stdin", stdin=password + "\n")
        assert login.returncode == 0, login.stdout + login.stderr
        assert "as admin (staff)" in login.stdout
        assert "Tenant: default" in login.stdout  # a fresh install's one tenant: nothing to pick
        assert password not in login.stdout + login.stderr
        saved = yaml.safe_load(config.read_text())
        assert saved["contexts"][saved["current-context"]]["token"].startswith("hm_")

        # README's command, word for word.
        deploy = hivemind(
            "app", "deploy", "--name", "hello", "--image", "hivemind/busybox", "--command", "httpd -f -p 8080",
            "--memory", "16Mi",
        )  # fmt: skip
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr

        listing = hivemind("app", "ls")
        assert listing.returncode == 0, listing.stderr
        header, *rows = listing.stdout.splitlines()
        assert header.split()[:2] == ["NAME", "STATUS"], listing.stdout
        assert [row.split()[:2] for row in rows] == [["hello", "running"]], listing.stdout

        info = hivemind("app", "info", "hello", "-o", "json")
        assert info.returncode == 0, info.stderr
        shown = yaml.safe_load(info.stdout)
        assert shown["name"] == "hello" and shown["status"] == "running", shown
        text = hivemind("app", "info", "hello")
        assert text.returncode == 0 and "running" in text.stdout, text.stdout

        pids = _descendants(process.pid)
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, as in the terminal
        try:
            code = process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert code in (0, -signal.SIGINT), "\n".join(output.lines[-40:])
    time.sleep(0.5)
    left = [pid for pid in pids if _alive(pid)]
    assert left == [], f"processes left running after Ctrl-C: {left}"
