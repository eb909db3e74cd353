"""`make run` as a user runs it: up, usable, and gone without a trace after Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from celery import Celery

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.e2e


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Output:
    """Collects the lines of a running process so the test can wait for one."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no line matched {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))
                self._changed.wait(remaining)


def test_make_run_serves_the_platform_and_stops_cleanly(subprocess_env, tmp_path, docker_daemon):
    port = free_port()
    redis_url = "redis://127.0.0.1:6379/14"
    subprocess_env.update(
        HIVEMIND_VAR_DIR=str(tmp_path / "var"),
        HIVEMIND_DATABASE_URL="",  # the embedded default: SQLite under the var dir
        HIVEMIND_REDIS_URL=redis_url,
        HIVEMIND_WEB_BIND=f"127.0.0.1:{port}",
        HIVEMIND_NODE_NAME="e2enode",
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
    base = f"http://127.0.0.1:{port}"
    pids: set[int] = set()
    try:
        password = output.wait_for(r"password: (\S+)", timeout=240).group(1)
        output.wait_for(rf"dashboard\s+{re.escape(base)}/", timeout=30)
        output.wait_for(r"agent\.e2enode@\S+ ready", timeout=120)
        output.wait_for(r"controller@\S+ ready", timeout=120)

        deadline = time.monotonic() + 60
        while True:
            try:
                health = requests.get(f"{base}/api/v1/health/", timeout=10)
                if health.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the health endpoint never turned green"
            time.sleep(0.5)
        body = health.json()
        assert body["status"] == "up"
        assert body["database"]["vendor"] == "sqlite"
        assert body["docker"]["e2enode"]["status"] == "up"

        # Admin login with the printed password.
        session = requests.Session()
        session.get(f"{base}/admin/login/", timeout=10)
        login = session.post(
            f"{base}/admin/login/?next=/admin/",
            data={
                "username": "admin",
                "password": password,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": f"{base}/admin/login/"},
            timeout=10,
        )
        assert login.status_code == 200
        assert login.url == f"{base}/admin/"
        assert "Site administration" in login.text

        # API docs render from local files (no CDN is reachable), and the schema they load answers.
        docs = requests.get(f"{base}/api/docs/", timeout=10)
        assert docs.status_code == 200
        scripts = re.findall(r'src="([^"]+\.js)"', docs.text)
        assert scripts and all(not s.startswith("http") for s in scripts)
        for script in scripts:
            assert requests.get(f"{base}{script}", timeout=10).status_code == 200
        assert "openapi" in requests.get(f"{base}/api/schema/?format=json", timeout=10).json()

        # A workflow through the whole platform (on SQLite): created by the admin over the
        # API, steps run by this node's agent, its metrics on /metrics next to the web's.
        created = session.post(
            f"{base}/api/v1/workflows/",
            json={"kind": "noop", "tenant": "default", "params": {"steps": 3, "node": "e2enode"}},
            headers={"X-CSRFToken": session.cookies["csrftoken"], "Referer": f"{base}/"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        detail = f"{base}/api/v1/workflows/{created.json()['id']}/"
        deadline = time.monotonic() + 60
        while (workflow := session.get(detail, timeout=10).json())["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"the workflow did not finish: {workflow}"
            time.sleep(0.3)
        assert workflow["state"] == "succeeded", workflow
        assert {step["worker"].split(" pid ")[0].split("@")[0] for step in workflow["steps"]} == {"agent.e2enode"}

        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert "hivemind_http_requests_total" in metrics
        assert "process_resident_memory_bytes" in metrics
        assert 'hivemind_workflows_total{kind="noop",state="succeeded"} 1.0' in metrics
        assert 'hivemind_workflow_step_duration_seconds_count{kind="noop",step="noop.step"} 3.0' in metrics

        # Both workers consume their queues: a task on each queue comes back from it.
        app = Celery(broker=redis_url, backend=redis_url)
        for queue in ("control", "node.e2enode"):
            result = app.send_task("hivemind.ping", queue=queue)
            assert result.get(timeout=30) == "e2enode"
        app.close()

        pids = _descendants(process.pid)
        assert len(pids) >= 5  # supervisor, gunicorn, two workers, beat (and their children)
    finally:
        # Ctrl-C in a terminal signals the whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    # make waits for its recipe to finish, then dies of the same SIGINT, as make does.
    assert code in (0, -signal.SIGINT), "\n".join(output.lines[-40:])
    output.wait_for(r"hivemind\s+\| SIGINT received, stopping every process", timeout=1)
    assert not [line for line in output.lines if "killed it" in line or "exited with code" in line]
    time.sleep(0.5)
    left = [pid for pid in pids if _alive(pid)]
    assert left == [], f"processes left running after Ctrl-C: {left}"


def test_make_run_again_is_fast(subprocess_env, tmp_path, docker_daemon):
    """A second bootstrap on a prepared machine does no installing and no building."""
    subprocess_env.update(
        HIVEMIND_VAR_DIR=str(tmp_path),
        HIVEMIND_DOCKER_HOST=docker_daemon.endpoint,
        HIVEMIND_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    command = ["make", "--no-print-directory", "bootstrap"]
    subprocess.run(command, cwd=REPO, env=subprocess_env, check=True, capture_output=True, timeout=300)
    start = time.monotonic()
    again = subprocess.run(command, cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert again.stdout.strip() == "[bootstrap] Python dependencies up to date"
    assert time.monotonic() - start < 10
