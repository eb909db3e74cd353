"""The embedded default under load, side by side with PostgreSQL.

`manage.py up` as `make run` starts it (web, controller, this node's agent and beat; SQLite
under its own var directory), on the bench's Docker daemon. For BENCH_SECONDS (90)
BENCH_WRITERS (10) clients each deploy a small app (one replica of busybox), wait for its
workflow, scale it to two, wait, delete it, wait, and start again, through the API; meanwhile
BENCH_READERS (2) clients list apps and workflows (a page of 50, 0.2 s between requests).
Halfway the broker's database is emptied (Redis lost its data): the reconciler has to send the
lost steps again. When the time is up the writers finish their cycle, and every workflow they
started must have succeeded. Then the same run on a fresh PostgreSQL database.

Prints per database and request kind: count, p50, p99, max; errors (any answer but the
expected one, or a workflow that did not succeed) and workflows succeeded / started. Targets
(Kubernetes' API SLO): mutating p99 <= 1 s and reads p99 <= 300 ms, with no error.

The platform uses the configured Redis database (HIVEMIND_REDIS_URL), which the run empties,
as bench/api.py does: never run it beside a test run or another platform on that database.

Environment: BENCH_SECONDS (90), BENCH_WRITERS (10), BENCH_READERS (2),
BENCH_DATABASES (sqlite,postgres).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import free_port, fresh_database, percentile, wait  # noqa: E402 - after the path is set

SECONDS = int(os.environ.get("BENCH_SECONDS", "90"))
WRITERS = int(os.environ.get("BENCH_WRITERS", "10"))
READERS = int(os.environ.get("BENCH_READERS", "2"))
DATABASES = [d.strip() for d in os.environ.get("BENCH_DATABASES", "sqlite,postgres").split(",") if d.strip()]
SPEC = {"image": "hivemind/busybox:latest", "command": "sleep 3600", "resources": {"cpu": "10m", "memory": "8Mi"}}
MUTATING = ("deploy", "scale", "delete")
READS = ("list apps", "list workflows")
NODE = "bench-embedded"


class Platform:
    """`manage.py up` in a var directory of its own; its lines are read as they come."""

    def __init__(self, env: dict[str, str]):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "up"], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, pattern: str) -> re.Match | None:
        if self.process.poll() is not None:
            raise SystemExit("manage.py up stopped:\n" + "\n".join(self.lines[-40:]))
        return next((m for line in self.lines if (m := re.search(pattern, line))), None)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
        try:
            self.process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Load:
    """The clients' requests: latencies per kind, errors, the workflows the writers started."""

    def __init__(self, base: str, token: str):
        self.base, self.token = base, token
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.workflows: list[int] = []
        self.lock = threading.Lock()

    def session(self):
        import requests

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    def request(self, session, kind: str, method: str, path: str, expected: int, **kwargs):
        start = time.perf_counter()
        try:
            response = session.request(method, self.base + path, timeout=60, **kwargs)
        except Exception as exc:  # every failure is counted and named
            with self.lock:
                self.errors.append(f"{kind}: {exc}")
            return None
        elapsed = time.perf_counter() - start
        with self.lock:
            self.latencies[kind].append(elapsed)
            if response.status_code != expected:
                self.errors.append(f"{kind}: {response.status_code} {response.text[:200]}")
                return None
        return response.json()

    def finished(self, session, workflow: int) -> None:
        """Wait (0.25 s polls, not counted as reads) until `workflow` ends; anything but success is an error."""
        with self.lock:
            self.workflows.append(workflow)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                answer = session.get(f"{self.base}/api/v1/workflows/{workflow}/", timeout=60)
            except Exception as exc:  # counted like any failed request, the writer goes on
                with self.lock:
                    self.errors.append(f"workflow {workflow}: {exc}")
                return
            if answer.status_code == 200 and answer.json()["state"] in ("succeeded", "failed", "cancelled"):
                if answer.json()["state"] != "succeeded":
                    with self.lock:
                        self.errors.append(f"workflow {workflow} {answer.json()['state']}: {answer.json()['error']}")
                return
            time.sleep(0.25)
        with self.lock:
            self.errors.append(f"workflow {workflow} did not end within 300 s")

    def writer(self, number: int, until: float) -> None:
        session, cycle = self.session(), 0
        while time.monotonic() < until:
            cycle += 1
            body = {"tenant": "default", "name": f"w{number}-{cycle}", "spec": SPEC, "replicas": 1}
            app = self.request(session, "deploy", "POST", "/api/v1/apps/", 202, json=body)
            if app is None:
                continue
            self.finished(session, app["workflow"])
            scaled = self.request(
                session, "scale", "POST", f"/api/v1/apps/{app['id']}/scale/", 202, json={"replicas": 2}
            )
            if scaled is not None:
                self.finished(session, scaled["workflow"])
            deleted = self.request(session, "delete", "DELETE", f"/api/v1/apps/{app['id']}/", 202)
            if deleted is not None:
                self.finished(session, deleted["workflow"])

    def reader(self, until: float) -> None:
        session = self.session()
        while time.monotonic() < until:
            self.request(session, "list apps", "GET", "/api/v1/apps/?limit=50", 200)
            time.sleep(0.2)
            self.request(session, "list workflows", "GET", "/api/v1/workflows/?limit=50", 200)
            time.sleep(0.2)


def _run(database: str, docker_host: str, redis_url: str) -> dict:
    import redis
    import requests

    from storage import loopfs

    var = Path(tempfile.mkdtemp(prefix=f"hivemind-bench-embedded-{database}-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HIVEMIND_VAR_DIR": str(var),
        "HIVEMIND_DATABASE_URL": "" if database == "sqlite" else fresh_database("bench_embedded", "bench/embedded.py"),
        "HIVEMIND_REDIS_URL": redis_url,
        "HIVEMIND_DOCKER_HOST": docker_host,
        "HIVEMIND_WEB_BIND": f"127.0.0.1:{port}",
        "HIVEMIND_NODE_NAME": NODE,
        "HIVEMIND_LOG_LEVEL": "WARNING",
        "HIVEMIND_STORAGE_SIZE": "1Gi",
    }
    env.pop("HIVEMIND_SECRET_KEY", None)  # generated into the var directory, as on a first start
    redis.Redis.from_url(redis_url).flushdb()
    platform = Platform(env)
    try:
        wait(lambda: platform.line(r"password: (\S+)"), 240, "the first admin's password")
        password = platform.line(r"password: (\S+)").group(1)

        def healthy() -> bool:
            try:
                return requests.get(f"{base}/api/v1/health/", timeout=30).status_code == 200
            except (requests.ConnectionError, requests.Timeout):
                return False

        wait(healthy, 240, "the platform's health to turn green")
        login = requests.post(
            f"{base}/api/v1/auth/login/",
            json={"username": "admin", "password": password, "name": "bench"},
            timeout=30,
        )
        if login.status_code != 201:
            raise SystemExit(f"login answered {login.status_code}: {login.text[:300]}")
        token = login.json()["token"]

        def node_ready() -> bool:
            # As a user would wait: a deploy before the node's agent registered is refused
            # (Unschedulable: no nodes), which is right, and no figure of the platform under load.
            answer = requests.get(f"{base}/api/v1/nodes/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
            rows = answer.json().get("results", []) if answer.status_code == 200 else []
            return any(row.get("name") == NODE and row.get("schedulable") for row in rows)

        wait(node_ready, 120, f"node {NODE} to be registered and schedulable")
        load = Load(base, token)
        began = time.monotonic()
        until = began + SECONDS
        threads = [threading.Thread(target=load.writer, args=(n, until)) for n in range(WRITERS)]
        threads += [threading.Thread(target=load.reader, args=(until,)) for _ in range(READERS)]
        for thread in threads:
            thread.start()
        time.sleep(SECONDS / 2)
        redis.Redis.from_url(redis_url).flushdb()  # the broker lost every message it held
        flushed = time.monotonic() - began
        for thread in threads:
            thread.join()
        return {
            "latencies": load.latencies,
            "errors": load.errors,
            "workflows": len(load.workflows),
            "failed": sum("workflow" in e for e in load.errors),
            "wall": time.monotonic() - began,
            "flushed": flushed,
        }
    finally:
        platform.stop()
        redis.Redis.from_url(redis_url).flushdb()
        storage = var / "storage"
        if (storage / "btrfs").exists():  # the default pool's loop file stays mounted after `make run`
            loopfs.release(storage / "btrfs", storage / "pool.img")
        shutil.rmtree(var, ignore_errors=True)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.conf import settings

    from hivemind.core import bootstrap
    from hivemind.nodes.runtime import docker_client

    daemon = bootstrap.ensure_dockerd(settings.DOCKER_HOST, settings.VAR_DIR / "docker", own_bridge=False)
    bootstrap.ensure_busybox_image(docker_client(settings.DOCKER_HOST))
    try:
        results = {database: _run(database, settings.DOCKER_HOST, settings.CELERY_BROKER_URL) for database in DATABASES}
    finally:
        daemon.stop()
    print(
        f"{WRITERS} writers (deploy, scale to 2, delete; each waits for its workflow) and {READERS} readers "
        f"(a page of apps, of workflows; 0.2 s apart) for {SECONDS} s; the broker emptied halfway; "
        f"{os.cpu_count()} cores"
    )
    print(f"{'database':<9} {'request':<15} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for database, result in results.items():
        for kind in (*MUTATING, *READS):
            values = [v * 1000 for v in result["latencies"].get(kind, [])]
            if not values:
                continue
            print(
                f"{database:<9} {kind:<15} {len(values):>6} {percentile(values, 50):>8.0f} "
                f"{percentile(values, 99):>8.0f} {max(values):>8.0f}"
            )
    for database, result in results.items():
        mutating = max(percentile([v * 1000 for v in result["latencies"][k]], 99) for k in MUTATING)
        reads = max(percentile([v * 1000 for v in result["latencies"][k]], 99) for k in READS)
        errors = result["errors"]
        print(
            f"{database}: workflows {result['workflows'] - result['failed']}/{result['workflows']} succeeded, "
            f"{len(errors)} errors; mutating p99 {mutating:.0f} ms (target <= 1000: "
            f"{'met' if mutating <= 1000 else 'not met'}), reads p99 {reads:.0f} ms (target <= 300: "
            f"{'met' if reads <= 300 else 'not met'}); broker emptied at {result['flushed']:.0f} s"
        )
        for error in errors[:10]:
            print(f"  {error}")


if __name__ == "__main__":
    main()
