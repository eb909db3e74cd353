"""/metrics at the scale of the issue: 1,000 apps x 3 replicas on 50 nodes, scraped as Prometheus
scrapes it (one request at a time), with the agents' samples (ContainerStat, NodeStat) and with
sampling off (no such rows: the same scrape without the container and machine figures).

Makes a fresh PostgreSQL database next to the configured one, migrates it and fills it in bulk:
20 tenants x 50 apps, 3 running replicas each spread over 50 ready nodes, each with its latest
sample, each node with its machine's figures. A real gunicorn serves `hivemind.wsgi` as
`manage.py up` runs it (PROMETHEUS_MULTIPROC_DIR set, 1 worker), scraped with a staff user's
token (the engine's series are staff's). Then BENCH_ROUNDS rounds alternating "sampling on" and
"sampling off" (the stats rows deleted and restored between the sides), BENCH_SCRAPES scrapes per
side and round: p50/p99 of the scrape time, its size and series, and one tenant's
/api/v1/metrics/ (its 50 apps) timed the same way. Target: p99 < 500 ms with sampling on.

Environment: BENCH_ROUNDS (3), BENCH_SCRAPES (30), BENCH_TENANTS (20), BENCH_APPS (50 per
tenant), BENCH_REPLICAS (3), BENCH_NODES (50).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt, free_port, fresh_database, percentile, wait  # noqa: E402 - after the path is set

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SCRAPES = int(os.environ.get("BENCH_SCRAPES", "30"))
TENANTS = int(os.environ.get("BENCH_TENANTS", "20"))
APPS = int(os.environ.get("BENCH_APPS", "50"))
REPLICAS = int(os.environ.get("BENCH_REPLICAS", "3"))
NODES = int(os.environ.get("BENCH_NODES", "50"))
BATCH = 2000
SPEC = {"image": "hivemind/busybox:latest", "command": "sleep 3600", "resources": {"cpu": "10m", "memory": "8Mi"}}


def populate():
    """Nodes, tenants, apps, replicas and their latest samples; returns the first tenant."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import OuterRef, Subquery
    from django.utils import timezone

    from hivemind.applications.models import App, AppRevision, Container
    from hivemind.applications.spec import clean_spec
    from hivemind.nodes.models import Node
    from observability.models import ContainerStat, NodeStat
    from tenants import services

    now = timezone.now()
    staff = get_user_model().objects.create_user("bench-staff", is_staff=True)
    nodes = Node.objects.bulk_create(
        Node(name=f"node-{i:03d}", address=f"10.1.{i // 250}.{i % 250 + 1}", status=Node.Status.READY,
             cpu_millis=8000, memory_bytes=32 << 30, last_heartbeat=now)
        for i in range(NODES)
    )  # fmt: skip
    NodeStat.objects.bulk_create(
        NodeStat(node=n, at=now, cpu_used_ratio=0.25, load1=1.5, load5=1.2, load15=1.0, memory_total_bytes=32 << 30,
                 memory_available_bytes=20 << 30, disk_total_bytes=500 << 30, disk_free_bytes=300 << 30)
        for n in nodes
    )  # fmt: skip
    tenants = [
        services.tenant_create(name=f"Tenant {i}", slug=f"tenant-{i:03d}", created_by=staff) for i in range(TENANTS)
    ]
    spec = clean_spec(SPEC)
    apps = App.objects.bulk_create(
        (App(tenant=t, name=f"app-{i:03d}", service_name=f"app-{i:03d}", status=App.Status.RUNNING,
             replicas=REPLICAS, created_by=staff) for t in tenants for i in range(APPS)),
        batch_size=BATCH,
    )  # fmt: skip
    AppRevision.objects.bulk_create(
        (AppRevision(app=app, number=1, spec=spec, change="created", created_by=staff) for app in apps),
        batch_size=BATCH,
    )
    App.objects.update(revision=Subquery(AppRevision.objects.filter(app=OuterRef("pk")).values("pk")[:1]))
    revisions = dict(App.objects.values_list("pk", "revision_id"))
    containers = Container.objects.bulk_create(
        (Container(tenant_id=app.tenant_id, app=app, revision_id=revisions[app.pk], replica=r,
                   node=nodes[(app.pk * REPLICAS + r) % NODES], name=f"hm-{app.pk}-{r}",
                   state=Container.State.RUNNING, health=Container.Health.HEALTHY, restarts=r)
         for app in apps for r in range(REPLICAS)),
        batch_size=BATCH,
    )  # fmt: skip
    ContainerStat.objects.bulk_create(
        (ContainerStat(container=c, at=now, cpu_millis=20 + c.pk % 50, memory_bytes=(8 << 20) + c.pk,
                       network_rx_bytes=c.pk * 1000, network_tx_bytes=c.pk * 700, block_read_bytes=c.pk * 10,
                       block_write_bytes=c.pk * 20) for c in containers),
        batch_size=BATCH,
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return tenants[0], staff


def scrape(session, url: str, headers: dict | None = None) -> tuple[float, int, int]:
    """(seconds, bytes, series) of one scrape."""
    started = time.perf_counter()
    answer = session.get(url, headers=headers or {}, timeout=60)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    text = answer.content
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return elapsed, len(text), series


def main() -> None:
    os.environ["HIVEMIND_DATABASE_URL"] = fresh_database("bench_metrics", "bench/metrics.py")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    import requests
    from django.conf import settings
    from django.core.management import call_command

    from observability.models import ContainerStat, NodeStat
    from tenants.services import api_token_create

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    tenant, staff = populate()
    token = api_token_create(user=staff, name="bench")[1]
    print(f"populated in {time.perf_counter() - began:.1f} s: {NODES} nodes, {TENANTS * APPS} apps x {REPLICAS} "
          f"replicas = {TENANTS * APPS * REPLICAS} containers")  # fmt: skip
    saved_stats = list(ContainerStat.objects.all())
    saved_nodes = list(NodeStat.objects.all())

    workdir = Path(tempfile.mkdtemp(prefix="hivemind-bench-metrics-"))
    (workdir / "multiproc").mkdir()
    port = free_port()
    web = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "hivemind.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", "4", "--no-control-socket", "--log-level", "warning"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=(workdir / "web.log").open("ab"), start_new_session=True,
        env={**os.environ, "HIVEMIND_SECRET_KEY": settings.SECRET_KEY, "HIVEMIND_LOG_LEVEL": "WARNING",
             "PROMETHEUS_MULTIPROC_DIR": str(workdir / "multiproc")},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    session = requests.Session()

    def answers() -> bool:
        if web.poll() is not None:
            raise SystemExit(f"the web process exited: {(workdir / 'web.log').read_text()[-2000:]}")
        try:
            return session.get(f"{base}/metrics", timeout=10).status_code == 200  # health: 503, fake nodes
        except requests.RequestException:
            return False

    try:
        wait(answers, 60, "the web process")
        auth = {"Authorization": f"Bearer {token}"}  # staff's: the engine's series are theirs only
        for _ in range(3):  # warm: imports, first queries, the planner's caches
            scrape(session, f"{base}/metrics", auth)
        sides = {"sampling on": [], "sampling off": [], "one tenant": []}
        shapes = {}
        tenant_url = f"{base}/api/v1/metrics/?tenant={tenant.slug}"
        for _round in range(ROUNDS):
            for side in ("sampling on", "sampling off"):
                if side == "sampling off":
                    ContainerStat.objects.all().delete()
                    NodeStat.objects.all().delete()
                for _ in range(SCRAPES):
                    elapsed, size, series = scrape(session, f"{base}/metrics", auth)
                    sides[side].append(elapsed)
                    shapes[side] = (size, series)
                if side == "sampling off":
                    ContainerStat.objects.bulk_create(saved_stats, batch_size=BATCH)
                    NodeStat.objects.bulk_create(saved_nodes)
            for _ in range(SCRAPES):
                elapsed, size, series = scrape(session, tenant_url, auth)
                sides["one tenant"].append(elapsed)
                shapes["one tenant"] = (size, series)
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the end; {ROUNDS} rounds x "
              f"{SCRAPES} scrapes per side, sequential as Prometheus scrapes")  # fmt: skip
        for side, times in sides.items():
            ms = [t * 1000 for t in times]
            size, series = shapes[side]
            print(f"{side:13} p50 {statistics.median(ms):7.1f} ms  p99 {percentile(ms, 99):7.1f} ms  "
                  f"max {max(ms):7.1f} ms  {size / 1024:8.0f} KiB  {series:6d} series")  # fmt: skip
        on, off = statistics.median(sides["sampling on"]), statistics.median(sides["sampling off"])
        print(f"sampling on / off (p50): {on / off:.2f}x; first round's p50s: "
              f"{fmt([statistics.median(v[:SCRAPES]) * 1000 for v in sides.values()])} ms")  # fmt: skip
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
