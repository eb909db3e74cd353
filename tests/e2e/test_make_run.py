"""`make run` as a user runs it: up, usable, and gone without a trace after Ctrl-C."""

from __future__ import annotations

import contextlib
import json
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
from django.conf import settings

from networking.node import clear_node
from storage import loopfs
from tests.conftest import REPO, free_port
from tests.e2e.platform import MakeTarget, wait_healthy

pytestmark = pytest.mark.e2e


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
        HIVEMIND_STORAGE_SIZE="1Gi",
    )
    subprocess_env.pop("HIVEMIND_STORAGE_POOL", None)  # as a new user runs it: a default pool, no questions
    run = MakeTarget("run", subprocess_env)
    output = run.output
    base = f"http://127.0.0.1:{port}"
    storage = tmp_path / "var" / "storage"
    try:
        pool_line = output.wait_for(r"\[storage\] default pool: (btrfs|local) in (\S+) \((.+)\)", timeout=240)
        expected = "local" if loopfs.btrfs_available() else "btrfs"
        assert pool_line.group(1) == expected, pool_line.group(0)
        password = output.wait_for(r"password: (\S+)", timeout=240).group(1)
        output.wait_for(rf"dashboard\s+{re.escape(base)}/", timeout=30)
        output.wait_for(r"agent\.e2enode@\S+ ready", timeout=120)
        output.wait_for(r"controller@\S+ ready", timeout=120)

        body = wait_healthy(base).json()
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

        assert len(run.note_processes()) >= 5  # supervisor, gunicorn, two workers, beat (and their children)

        # The agent registered the default pool it found ready: volumes can be made at once.
        deadline = time.monotonic() + 60
        while True:
            pools = session.get(f"{base}/api/v1/storage-pools/", timeout=10).json()["results"]
            if pools and pools[0]["status"] == "ready" and pools[0]["capacity_bytes"]:
                break
            assert time.monotonic() < deadline, f"no ready default pool: {pools}"
            time.sleep(0.5)
        assert (pools[0]["name"], pools[0]["provider"], pools[0]["is_default"]) == ("e2enode-default", expected, True)
    finally:
        run.interrupt(60)
        if (storage / "btrfs").exists():  # the loop file stays mounted after `make run` (volumes live there)
            loopfs.release(storage / "btrfs", storage / "pool.img")
    run.assert_stopped_cleanly()
    output.wait_for(r"hivemind\s+\| SIGINT received, stopping every process", timeout=1)
    assert not [line for line in output.lines if "killed it" in line or "exited with code" in line]


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


# --- A platform that stays up: every process killed once under one `make run` ------------------

APP_SPEC = {
    "image": "hivemind/busybox:latest",
    "command": "httpd -f -p 8080",
    "resources": {"cpu": "100m", "memory": "16Mi"},
    "health": {"type": "tcp", "port": 8080, "interval": 0.5, "timeout": 1, "retries": 3},
}
# Slow to become healthy: its deploy is still on the agent (step apps.start waits for it) when the agent dies.
SLOW_SPEC = {
    **APP_SPEC,
    "command": "sh -c 'sleep 6; exec httpd -f -p 8080'",
    "health": {**APP_SPEC["health"], "start_period": 30},
}


def _admin_session(base: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/admin/login/", timeout=10)
    login = session.post(
        f"{base}/admin/login/?next=/admin/",
        data={"username": "admin", "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": f"{base}/admin/login/"},
        timeout=10,
    )
    assert login.url == f"{base}/admin/", login.text[:500]
    session.headers.update({"X-CSRFToken": session.cookies["csrftoken"], "Referer": f"{base}/"})
    return session


def _pgroup(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def _group_members(pgid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _pgroup(int(p.name)) == pgid]


class HealthWatch:
    """Polls /api/v1/health/ four times a second for the whole test and keeps every answer."""

    def __init__(self, base: str):
        self.base = base
        self.answers: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            at = time.monotonic()
            try:
                outcome: int | str = requests.get(f"{self.base}/api/v1/health/", timeout=10).status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            self.answers.append((at, outcome))

    def failures(self, start: float, end: float) -> list[tuple[float, int | str]]:
        return [(at - start, outcome) for at, outcome in self.answers if start <= at <= end and outcome != 200]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.timeout(900)
def test_make_run_restarts_each_killed_process_and_every_container_survives(
    subprocess_env, tmp_path, docker_daemon, docker_client
):
    import redis

    from hivemind.core.processes import state_path

    port = free_port()
    redis_url = "redis://127.0.0.1:6379/14"
    redis.Redis.from_url(redis_url).flushdb()  # nothing left over from an earlier run
    for leftover in docker_client.containers.list(all=True, filters={"label": "io.hivemind.managed=true"}):
        leftover.remove(force=True)
    var_dir = tmp_path / "var"
    subprocess_env.update(
        HIVEMIND_VAR_DIR=str(var_dir),
        HIVEMIND_DATABASE_URL="",
        HIVEMIND_REDIS_URL=redis_url,
        HIVEMIND_WEB_BIND=f"127.0.0.1:{port}",
        HIVEMIND_NODE_NAME="e2enode",
        HIVEMIND_DOCKER_HOST=docker_daemon.endpoint,
        # A step whose worker died is noticed after 3 s and sent again within 2 s.
        HIVEMIND_STEP_HEARTBEAT="1",
        HIVEMIND_RECONCILE_INTERVAL="2",
        HIVEMIND_NODE_HEARTBEAT="2",
    )
    run = MakeTarget("run", subprocess_env)
    output = run.output
    base = f"http://127.0.0.1:{port}"
    state_file = state_path(var_dir)
    watch: HealthWatch | None = None
    celery = Celery(broker=redis_url, backend=redis_url)

    def processes() -> dict:
        return json.loads(state_file.read_text())["processes"]

    def ping(queue: str) -> None:
        assert celery.send_task("hivemind.ping", queue=queue).get(timeout=30) == "e2enode", queue

    def workflow(session, pk: int) -> dict:
        return session.get(f"{base}/api/v1/workflows/{pk}/", timeout=10).json()

    def finished(session, pk: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while (body := workflow(session, pk))["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"workflow {pk} did not finish: {body}"
            time.sleep(0.5)
        return body

    try:
        password = output.wait_for(r"password: (\S+)", timeout=240).group(1)
        cli = output.wait_for(r"^\s+CLI\s+(.*)$", timeout=30).group(1)
        bindir = os.path.dirname(os.path.abspath(f"{REPO}/.venv/bin/python"))
        assert cli == f'export PATH="{bindir}:$PATH"; hivemind login --server {base} --username admin'
        output.wait_for(r"agent\.e2enode@\S+ ready", timeout=120)
        output.wait_for(r"controller@\S+ ready", timeout=120)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{base}/api/v1/health/", timeout=10).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the health endpoint never turned green"
            time.sleep(0.5)
        session = _admin_session(base, password)

        # An app whose container must live through everything that follows.
        steady = session.post(
            f"{base}/api/v1/apps/", json={"tenant": "default", "name": "steady", "replicas": 1, "spec": APP_SPEC}
        )
        assert steady.status_code in (201, 202), steady.text
        deployed = finished(session, steady.json()["workflow"], 120)
        assert deployed["state"] == "succeeded", deployed.get("error")
        (container,) = docker_client.containers.list(filters={"label": f"io.hivemind.app={steady.json()['id']}"})
        started_at = container.attrs["State"]["StartedAt"]

        watch = HealthWatch(base)
        inflight = None
        for name in ("agent", "controller", "beat", "web"):
            before = processes()
            assert all(p["state"] == "running" for p in before.values()), before
            victim = before[name]["pid"]
            if name == "agent":
                # A deploy in flight: killed while its step runs on this very agent.
                created = session.post(
                    f"{base}/api/v1/apps/",
                    json={"tenant": "default", "name": "inflight", "replicas": 1, "spec": SLOW_SPEC},
                )
                assert created.status_code in (201, 202), created.text
                inflight = created.json()["workflow"]
                deadline = time.monotonic() + 60
                while not any(
                    s["state"] == "running" and s["queue"] == "node.e2enode" and s["name"] == "apps.start"
                    for s in workflow(session, inflight)["steps"]
                ):
                    assert time.monotonic() < deadline, workflow(session, inflight)
                    time.sleep(0.1)
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)

            # Restarted within 5 s (measured by polling the supervisor's state file), its whole group gone.
            while not ((now := processes()[name])["state"] == "running" and now["pid"] not in (None, victim)):
                assert time.monotonic() - killed < 5, f"{name} was not restarted within 5 s: {now}"
                time.sleep(0.05)
            restarted_in = time.monotonic() - killed
            assert restarted_in <= 5
            deadline = time.monotonic() + 5
            while left := _group_members(victim):
                assert time.monotonic() < deadline, f"the killed {name}'s group lingers: {left}"
                time.sleep(0.1)
            # The others are untouched and keep answering while it comes back.
            after = processes()
            assert {n: p["pid"] for n, p in after.items() if n != name} == {
                n: p["pid"] for n, p in before.items() if n != name
            }
            if name != "controller":
                ping("control")
            if name != "agent":
                ping("node.e2enode")
            # Ready again (its lines carry the restart in their prefix).
            if name in ("agent", "controller"):
                pattern = rf"^{name}↻1\s*\| .*{'agent.e2enode' if name == 'agent' else 'controller'}@\S+ ready"
                output.wait_for(pattern, timeout=120)
                ping("node.e2enode" if name == "agent" else "control")
            elif name == "beat":
                output.wait_for(r"^beat↻1\s*\| .*beat: Starting", timeout=120)
            else:
                deadline = time.monotonic() + 60
                while watch.answers[-1][1] != 200 or watch.answers[-1][0] < killed:
                    assert time.monotonic() < deadline, watch.answers[-5:]
                    time.sleep(0.2)
            if name != "web":
                assert watch.failures(killed, time.monotonic()) == [], f"health failed while {name} restarted"
            output.wait_for(rf"^hivemind\s+\| {name} killed by SIGKILL after \S+; restarting it in 0\.5s", timeout=1)

        # The deploy in flight finished by itself; the steady container never stopped.
        assert inflight is not None
        done = finished(session, inflight, 180)
        assert done["state"] == "succeeded", (
            done["error"],
            [(st["name"], st["state"], st["attempts"], st["error"], st["history"]) for st in done["steps"]],
            [line for line in output.lines if "ERROR" in line or "WARNING" in line][-20:],
        )
        (start,) = [st for st in done["steps"] if st["name"] == "apps.start"]
        assert start["attempts"] >= 2, start  # the kill did hit it: it ran again on the restarted agent
        container.reload()
        assert container.status == "running"
        assert container.attrs["State"]["StartedAt"] == started_at
        assert [
            c.id for c in docker_client.containers.list(filters={"label": f"io.hivemind.app={steady.json()['id']}"})
        ] == [container.id]

        health = requests.get(f"{base}/api/v1/health/", timeout=10)
        assert health.status_code == 200, health.text
        shown = health.json()["processes"]
        assert {n: (p["state"], p["restarts"], p["last_exit_code"]) for n, p in shown.items()} == {
            n: ("running", 1, -signal.SIGKILL) for n in ("web", "controller", "agent", "beat")
        }
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        for name in ("web", "controller", "agent", "beat"):
            assert f'hivemind_process_restarts_total{{process="{name}"}} 1.0' in metrics
            assert f'hivemind_process_up{{process="{name}"}} 1.0' in metrics
        run.note_processes()
    finally:
        if watch is not None:
            watch.stop()
        celery.close()
        try:
            run.interrupt(90)
        finally:
            clear_node(docker_client, node="e2enode", netns=settings.CONFIG.node_netns)
    run.assert_stopped_cleanly()
    assert not [line for line in output.lines if "crash-looping" in line or "killed it" in line]
    assert not state_file.exists()
