"""The REST API under 20 concurrent clients: GET a page of apps scoped and unscoped, POST deploys.

Makes a fresh PostgreSQL database next to the configured one, migrates it and fills it in
bulk: 100 tenants x 100 apps = 10,000 apps, each with its revision and one running
replica (the list reads the revision and counts running containers). A member of one
tenant (operator: may deploy) and a platform staff user get API tokens. A real gunicorn
serves `hivemind.wsgi` as `manage.py up` runs it (HIVEMIND_WEB_WORKERS processes, one per core
by default, of HIVEMIND_WEB_THREADS threads, metrics in multiprocess mode)
on a port of its own. 20 client threads, each with a keep-alive `requests.Session`, then:

- scoped:   GET /api/v1/apps/?limit=50 as the member (its tenant's 100 apps, through `restrict()`);
- unscoped: the same page as staff (all 10,000 apps);
- deploy:   POST /api/v1/apps/ as the member, unique names, each answered 202. No worker
            runs: the 202 is the measure and the workflows stay queued in the bench's Redis
            database, which is flushed at the end.

Scoped and unscoped alternate for BENCH_ROUNDS rounds (medians), so a noisy moment on the
machine hits both sides. Prints p50, p99, mean and requests/s per phase, the CPU the server
spent per request (gunicorn and PostgreSQL: steadier than latencies on a shared machine),
the SQL queries one page costs (for 5 and for 50 apps: the count must not grow with the
page) and the ratio scoped/unscoped. Target: scoped <= 1.3 x unscoped (p50 and p99).

Environment: BENCH_CLIENTS (20), BENCH_GETS (300 per side per round), BENCH_POSTS (500),
BENCH_ROUNDS (3), BENCH_TENANTS (100), BENCH_APPS (100 per tenant),
BENCH_TENANT_HEADER (0; 1: the member also sends X-Hivemind-Tenant, as the CLI in a context does).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import ServerCpu, fmt, free_port, fresh_database, percentile, wait  # noqa: E402 - after the path is set

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "20"))
GETS = int(os.environ.get("BENCH_GETS", "300"))
POSTS = int(os.environ.get("BENCH_POSTS", "500"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TENANTS = int(os.environ.get("BENCH_TENANTS", "100"))
APPS = int(os.environ.get("BENCH_APPS", "100"))
TENANT_HEADER = os.environ.get("BENCH_TENANT_HEADER", "0") == "1"
PAGE = "/api/v1/apps/?limit=50"
SPEC = {"image": "hivemind/busybox:latest", "command": "sleep 3600", "resources": {"cpu": "10m", "memory": "8Mi"}}
BATCH = 2000  # rows per INSERT
WARM_POSTS = 40  # deploys of the warm-up: they join the member's tenant


def _populate():
    """Tenants, apps, revisions and replicas in bulk; returns (member tenant, member, staff)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import OuterRef, Subquery

    from hivemind.applications.models import App, AppRevision, Container
    from hivemind.applications.services import amounts_for
    from hivemind.applications.spec import clean_spec
    from tenants import services
    from tenants.models import Role, TenantUsage
    from tenants.quotas import RESOURCES

    User = get_user_model()
    staff = User.objects.create_user("bench-staff", is_staff=True)
    member = User.objects.create_user("bench-member")
    tenants = [
        services.tenant_create(name=f"Tenant {i}", slug=f"tenant-{i:03d}", created_by=staff) for i in range(TENANTS)
    ]
    # A tenant in the middle: neither the first nor the last in the list's (tenant, name) order.
    home = tenants[TENANTS // 2]
    services.membership_add(tenant=home, user=member, role=Role.OPERATOR, actor=staff)
    # The member's tenant takes every deploy of the run (and its warm-up): no limits there.
    services.quota_set(tenant=home, limits=dict.fromkeys(RESOURCES), actor=staff)

    spec = clean_spec(SPEC)
    apps = App.objects.bulk_create(
        (
            App(tenant=t, name=f"app-{i:03d}", service_name=f"app-{i:03d}", status=App.Status.RUNNING, created_by=staff)
            for t in tenants
            for i in range(APPS)
        ),
        batch_size=BATCH,
    )
    revisions = AppRevision.objects.bulk_create(
        (AppRevision(app=app, number=1, spec=spec, change="created", created_by=staff) for app in apps),
        batch_size=BATCH,
    )
    App.objects.update(revision=Subquery(AppRevision.objects.filter(app=OuterRef("pk")).values("pk")[:1]))
    cpu, memory = spec["resources"]["cpu"], spec["resources"]["memory"]
    replicas = (
        Container(tenant_id=app.tenant_id, app=app, revision=revision, replica=0, name=f"hm-{app.pk}-0",
                  state=Container.State.RUNNING, cpu_millis=cpu, memory_bytes=memory)
        for app, revision in zip(apps, revisions, strict=True)
    )  # fmt: skip
    Container.objects.bulk_create(replicas, batch_size=BATCH)
    held = amounts_for(spec, APPS)
    TenantUsage.objects.update(
        apps=APPS, containers=held["containers"], cpu_millis=held["cpu"], memory_bytes=held["memory"]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # the planner's statistics, as autovacuum keeps them on a live database
    return home, member, staff


def _queries_per_page(token: str, tenant_slug: str | None) -> tuple[int, int]:
    """SQL queries of one GET for a page of 5 and of 50 apps, in this process (Django's test client)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    headers = {"Authorization": f"Bearer {token}"}
    if tenant_slug:
        headers["X-Hivemind-Tenant"] = tenant_slug
    client = Client(headers=headers, HTTP_HOST="127.0.0.1")
    client.get("/api/v1/apps/?limit=1")  # first use: the token's last-used time, content types cached
    counts = []
    for limit in (5, 50):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(f"/api/v1/apps/?limit={limit}")
        if response.status_code != 200 or len(response.json()["results"]) != limit:
            raise SystemExit(f"GET apps?limit={limit} answered {response.status_code}: {response.content[:300]!r}")
        counts.append(len(captured))
    return counts[0], counts[1]


def _run(make_request, count: int) -> tuple[list[float], float]:
    """`count` requests spread over CLIENTS threads (one keep-alive session each).

    `make_request(session, number)` sends one request and returns its response; anything but
    the expected status stops the benchmark. Returns the latencies (s) and the wall time."""
    import requests

    numbers = itertools.count()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            mine = []
            while not failures:
                number = next(numbers)  # itertools.count is atomic under the GIL
                if number >= count:
                    break
                start = time.perf_counter()
                try:
                    make_request(session, number)
                except Exception as exc:  # any failure is reported below and stops the run
                    failures.append(str(exc))
                    break
                mine.append(time.perf_counter() - start)
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if failures:
        raise SystemExit(f"a request failed: {failures[0]}")
    return latencies, wall


def _measure(make_request, count: int, web_pid: int) -> dict[str, float]:
    """One phase: latency percentiles, throughput, and the CPU the server spent per request
    (gunicorn and PostgreSQL): on a shared machine latencies move with the neighbours' load,
    the CPU per request much less."""
    from django.db import connection

    with ServerCpu(web_pid, connection.settings_dict["NAME"]) as cpu:
        latencies, wall = _run(make_request, count)
    return {
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "mean": statistics.fmean(latencies) * 1000,
        "rps": len(latencies) / wall,
        "web_cpu": cpu.used("web") / count * 1000,
        "db_cpu": cpu.used("db") / count * 1000,
    }


def main() -> None:
    os.environ["HIVEMIND_DATABASE_URL"] = fresh_database("bench_api", "bench/api.py")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    import redis
    import requests
    from django.conf import settings
    from django.core.management import call_command

    from hivemind.applications.models import App
    from tenants.services import api_token_create

    call_command("migrate", verbosity=0)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.flushdb()
    began = time.perf_counter()
    tenant, member, staff = _populate()
    member_token = api_token_create(user=member, name="bench")[1]
    staff_token = api_token_create(user=staff, name="bench")[1]
    populated = time.perf_counter() - began
    header_slug = tenant.slug if TENANT_HEADER else None
    member_headers = {"Authorization": f"Bearer {member_token}"}
    if header_slug:
        member_headers["X-Hivemind-Tenant"] = header_slug
    staff_headers = {"Authorization": f"Bearer {staff_token}"}
    queries = {"scoped": _queries_per_page(member_token, header_slug), "unscoped": _queries_per_page(staff_token, None)}

    port = free_port()
    workers, threads = settings.CONFIG.web_workers, settings.CONFIG.web_threads
    scratch = Path(tempfile.mkdtemp(prefix="hivemind-bench-api-"))
    log = scratch / "web.log"
    (scratch / "metrics").mkdir()
    web = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "hivemind.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", str(threads), "--no-control-socket", "--log-level", "warning"],
        # A file, not a pipe: nobody reads the log while the clients run, and a full pipe blocks
        # every request thread that logs. Metrics in multiprocess mode, as under `manage.py up`.
        cwd=REPO, env={**os.environ, "HIVEMIND_SECRET_KEY": settings.SECRET_KEY, "HIVEMIND_LOG_LEVEL": "WARNING",
                       "PROMETHEUS_MULTIPROC_DIR": str(scratch / "metrics")},
        stdout=subprocess.DEVNULL, stderr=log.open("ab"), start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if web.poll() is not None:
            raise SystemExit(f"gunicorn did not start: {log.read_text(errors='replace')[-2000:]}")
        try:
            return requests.get(f"{base}/api/v1/me/", headers=staff_headers, timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def page(headers: dict, expected_count: int):
        def get(session, _number):
            response = session.get(base + PAGE, headers=headers, timeout=60)
            if response.status_code != 200:
                raise RuntimeError(f"GET {PAGE} answered {response.status_code}: {response.text[:300]}")
            body = response.json()
            if body["count"] != expected_count or len(body["results"]) != 50:
                raise RuntimeError(f"GET {PAGE}: count {body['count']}, {len(body['results'])} results")
            return response

        return get

    def deploy(prefix: str):
        def post(session, number):
            payload = {"tenant": tenant.slug, "name": f"{prefix}-{number}", "spec": SPEC, "replicas": 1}
            response = session.post(f"{base}/api/v1/apps/", json=payload, headers=member_headers, timeout=60)
            if response.status_code != 202:
                raise RuntimeError(f"POST /api/v1/apps/ answered {response.status_code}: {response.text[:300]}")
            return response

        return post

    try:
        wait(answers, 60, "gunicorn to answer")
        # Warm up every path (the deploys first: their apps are in the pages that follow).
        _run(deploy("warm"), WARM_POSTS)
        scoped_get = page(member_headers, APPS + WARM_POSTS)
        unscoped_get = page(staff_headers, TENANTS * APPS + WARM_POSTS)
        _run(scoped_get, 200), _run(unscoped_get, 200)
        rounds: dict[str, list[dict[str, float]]] = {"scoped": [], "unscoped": []}
        for _ in range(ROUNDS):
            rounds["scoped"].append(_measure(scoped_get, GETS, web.pid))
            rounds["unscoped"].append(_measure(unscoped_get, GETS, web.pid))
        # Last: the deploys add apps to the member's tenant, which the GET phases page through.
        deploys = _measure(deploy("bench"), POSTS, web.pid)
        made = App.objects.filter(tenant=tenant, name__startswith="bench-").count()
        if made != POSTS:
            raise SystemExit(f"{POSTS} deploys answered 202 but {made} apps exist")
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
        broker.flushdb()  # the queued workflows' messages: no worker ran to take them

    medians = {
        side: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for side, results in rounds.items()
    }
    print(
        f"data: {TENANTS} tenants x {APPS} apps = {TENANTS * APPS} apps (+ revision, 1 running replica each), "
        f"filled in {populated:.1f} s"
    )
    print(
        f"server: gunicorn hivemind.wsgi, {workers} workers x {threads} threads (as manage.py up); "
        f"{CLIENTS} client threads, keep-alive sessions"
    )
    who = "member + X-Hivemind-Tenant" if TENANT_HEADER else "member"
    print(f"GET {PAGE}: {ROUNDS} alternating rounds of {GETS} requests per side, medians")
    rows = (
        (f"GET scoped ({who}, {APPS + WARM_POSTS} apps)", GETS, medians["scoped"], rounds["scoped"]),
        (f"GET unscoped (staff, {TENANTS * APPS + WARM_POSTS} apps)", GETS, medians["unscoped"], rounds["unscoped"]),
        ("POST deploy (member, 202)", POSTS, deploys, []),
    )
    width = max(len(row[0]) for row in rows)
    print(
        f"{'phase':<{width}} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'req/s':>7} {'web CPU':>8} "
        f"{'db CPU':>7}  rounds p50 / p99"
    )
    for label, count, m, per_round in rows:
        spread = f"  {fmt([r['p50'] for r in per_round])} / {fmt([r['p99'] for r in per_round])}" if per_round else ""
        print(
            f"{label:<{width}} {count:>8} {m['p50']:>8.1f} {m['p99']:>8.1f} {m['mean']:>8.1f} {m['rps']:>7.1f}"
            f" {m['web_cpu']:>8.2f} {m['db_cpu']:>7.2f}{spread}"
        )
    print("(web CPU, db CPU: ms of CPU per request in gunicorn and in PostgreSQL)")
    for side, (five, fifty) in queries.items():
        print(f"SQL queries per GET page, {side:<8}: {five} for 5 apps, {fifty} for 50 apps")
    p50 = medians["scoped"]["p50"] / medians["unscoped"]["p50"]
    p99 = medians["scoped"]["p99"] / medians["unscoped"]["p99"]
    met = "met" if max(p50, p99) <= 1.3 else "not met"
    cpu = (medians["scoped"]["web_cpu"] + medians["scoped"]["db_cpu"]) / (
        medians["unscoped"]["web_cpu"] + medians["unscoped"]["db_cpu"]
    )
    print(
        f"ratio scoped ({who})/unscoped: p50 {p50:.2f}x, p99 {p99:.2f}x  (target <= 1.30x: {met}); "
        f"server CPU per request {cpu:.2f}x"
    )
    worst = max(medians["scoped"]["p99"], deploys["p99"])
    print(f"p99 of the scoped page and of the deploy: at most {worst:.0f} ms (target <= 300 ms: "
          f"{'met' if worst <= 300 else 'not met'})")  # fmt: skip


if __name__ == "__main__":
    main()
