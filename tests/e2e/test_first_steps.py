"""README's first steps, as a new user walks them: `make run` prints the admin's password; with
the virtualenv's `bin` on PATH, `hivemind login --username admin` (the password through
--password-stdin) gets the CLI its token; `hivemind app deploy` runs hivemind/busybox, and
`hivemind app ls` and `info` show it running. No step uses a browser, a session or code.

How `make run` is started, waited for and stopped is tests/e2e/platform.py's.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
import yaml
from django.conf import settings

from networking.node import clear_node
from tests.conftest import REPO, free_port
from tests.e2e.platform import MakeTarget, wait_healthy

pytestmark = pytest.mark.e2e


def readme_first_steps() -> list[list[str]]:
    """The `hivemind` commands of the README's "First steps" block, as argument lists."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## First steps") :]
    block = section[section.index("```sh") + len("```sh") : section.index("```", section.index("```sh") + 5)]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [words[1:] for words in commands if words and words[0] == "hivemind"]


def test_first_steps_from_make_run_to_a_running_app(subprocess_env, tmp_path, docker_daemon, docker_client):
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
    run = MakeTarget("run", subprocess_env)
    output = run.output

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

    try:
        password = output.wait_for(r"password: (\S+)", timeout=240).group(1)
        output.wait_for(rf"dashboard\s+{re.escape(base)}/", timeout=30)
        output.wait_for(r"agent\.firststeps@\S+ ready", timeout=120)
        output.wait_for(r"controller@\S+ ready", timeout=120)
        wait_healthy(base)

        steps = readme_first_steps()
        assert [words[:2] for words in steps] == [["login", "--server"], ["app", "deploy"], ["app", "ls"]], steps
        login_words, deploy_words = steps[0], steps[1]
        # README's login, word for word, but for the server's port and the password coming from a pipe
        # instead of the terminal's prompt.
        login_words[2] = base
        login = hivemind(*login_words, "--password-stdin", stdin=password + "\n")
        assert login.returncode == 0, login.stdout + login.stderr
        assert "as admin (staff)" in login.stdout
        assert "Tenant: default" in login.stdout  # a fresh install's one tenant: nothing to pick
        assert password not in login.stdout + login.stderr
        saved = yaml.safe_load(config.read_text())
        assert saved["contexts"][saved["current-context"]]["token"].startswith("hm_")

        # README's deploy, word for word.
        deploy = hivemind(*deploy_words)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        name = deploy_words[deploy_words.index("--name") + 1]

        listing = hivemind(*steps[2])
        assert listing.returncode == 0, listing.stderr
        header, *rows = listing.stdout.splitlines()
        assert header.split()[:2] == ["NAME", "STATUS"], listing.stdout
        assert [row.split()[:2] for row in rows] == [[name, "running"]], listing.stdout

        info = hivemind("app", "info", name, "-o", "json")
        assert info.returncode == 0, info.stderr
        shown = yaml.safe_load(info.stdout)
        assert shown["name"] == name and shown["status"] == "running", shown
        text = hivemind("app", "info", name)
        assert text.returncode == 0 and "running" in text.stdout, text.stdout

        run.note_processes()
    finally:
        try:
            run.interrupt(90)
        finally:  # what the user's app made on the suite's node (the platform stops; its apps run on)
            clear_node(docker_client, node="firststeps", netns=settings.CONFIG.node_netns)
    run.assert_stopped_cleanly()
