"""The scheduler at cluster scale: 10,000 replicas onto 5,000 nodes, from the database and back.

Makes a fresh PostgreSQL database next to the configured one, migrates it, and fills it in
bulk: 5,000 nodes (varied capacities and labels, a few tainted, cordoned, draining, not
ready or dedicated to another tenant), 5,000 containers already running (one per ready
node), a tenant and 100 apps with mixed requests and placements (node selectors, binpack,
preferred and required (anti-)affinity, tolerations). Then, per round, it times:

- load:    `nodes_for_scheduling()` (three queries: nodes, usage per node, replicas per app);
- place:   building the 10,000 requests (100 apps x 100 replicas) and `place()`;
- persist: the decisions as Container rows, one transaction, through `insert_rows` as the
           plan step persists an app's placements (COPY on PostgreSQL); and, side by side,
           the same rows through `bulk_create` (a model instance each), as before;

and removes the round's containers again. Prints placements/s for the whole and for
placing alone (medians over the rounds) and the machine. Target: >= 10,000 placements/s for
the whole.

Environment: BENCH_NODES (5000), BENCH_APPS (100), BENCH_REPLICAS (100 per app), BENCH_ROUNDS (3).
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fresh_database  # noqa: E402 - after the path is set

NODES = int(os.environ.get("BENCH_NODES", "5000"))
APPS = int(os.environ.get("BENCH_APPS", "100"))
REPLICAS = int(os.environ.get("BENCH_REPLICAS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BATCH = 2000  # rows per INSERT when persisting
GiB, MiB = 2**30, 2**20


def _machine() -> str:
    cpu = "unknown cpu"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        memory_kib = int(meminfo.readline().split()[1])
    system = platform.platform()
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as release:
            fields = dict(line.rstrip("\n").split("=", 1) for line in release if "=" in line)
            system = fields.get("PRETTY_NAME", system).strip('"')
    return f"{os.cpu_count()} cores ({cpu}), {memory_kib / 2**20:.1f} GiB, {system}, Python {platform.python_version()}"


def _populate(rng: random.Random):
    """The cluster, the tenant and its apps; returns (tenant, [(app, revision, placement dict, cpu, memory)])."""
    from hivemind.applications.models import App, AppRevision, Container
    from hivemind.nodes.models import Node
    from tenants.services import tenant_create

    tenant = tenant_create(name="Bench", slug="bench", created_by=None)
    other = tenant_create(name="Other", slug="other", created_by=None, isolation_level="hard")
    nodes = []
    for i in range(NODES):
        labels = {"zone": rng.choice(["eu-1", "eu-2", "us-1"]), "disk": rng.choice(["ssd", "hdd"])}
        taints = []
        roll = rng.random()
        if roll < 0.02:
            labels["gpu"] = "true"
            taints.append({"key": "gpu", "value": "true", "effect": "NoSchedule"})
        elif roll < 0.03:
            taints.append({"key": "spot", "value": "", "effect": "PreferNoSchedule"})
        elif roll < 0.04:
            labels["hivemind.io/tenant"] = other.slug
        state = rng.random()
        nodes.append(
            Node(
                name=f"node-{i:05d}",
                cpu_millis=rng.choice([2000, 4000, 8000, 16000]),
                memory_bytes=rng.choice([4, 8, 16, 32, 64]) * GiB,
                labels=labels,
                taints=taints,
                status=Node.Status.NOT_READY if state < 0.01 else Node.Status.READY,
                cordoned=0.01 <= state < 0.02,
                draining=0.02 <= state < 0.025,
            )
        )
    Node.objects.bulk_create(nodes, batch_size=BATCH)

    apps = App.objects.bulk_create(
        [App(tenant=tenant, name=f"app-{a:03d}", replicas=REPLICAS) for a in range(APPS)]
        + [App(tenant=other, name="base", replicas=NODES)]
    )
    specs = []
    for a, app in enumerate(apps[:APPS]):
        placement: dict = {}
        if a % 5 == 0:
            placement["node_selector"] = {"disk": "ssd"}
        if a % 10 == 3:
            placement["node_selector"] = {"zone": "eu-1"}
        if a % 7 == 0:
            placement["strategy"] = "binpack"
        if a % 13 == 0:
            placement["affinity"] = {"preferred": [{"weight": 40, "term": {"node_labels": {"zone": "eu-2"}}}]}
        if a % 17 == 0:
            placement["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
        if a % 20 == 11:
            placement["anti_affinity"] = {"required": [{"app": app.name}]}  # one replica per node
        if a % 25 == 1:
            placement["affinity"] = {"preferred": [{"weight": 80, "term": {"app": "app-000"}}]}
        cpu = rng.choice([100, 250, 500, 1000, 2000])
        memory = rng.choice([128, 256, 512, 1024, 2048]) * MiB
        spec = {"image": "nginx:1.27", "resources": {"cpu": cpu, "memory": memory}, "placement": placement}
        specs.append((app, spec))
    revisions = AppRevision.objects.bulk_create(
        [AppRevision(app=app, number=1, spec=spec) for app, spec in specs]
        + [AppRevision(app=apps[-1], number=1, spec={"image": "busybox"})]
    )
    for app, revision in zip(apps, revisions, strict=True):
        app.revision = revision
    App.objects.bulk_update(apps, ["revision"])

    # What already runs: one container of another tenant's app on every ready node.
    base, base_revision = apps[-1], revisions[-1]
    running = [
        Container(
            tenant=other,
            app=base,
            revision=base_revision,
            replica=i,
            node=node,
            name=f"other-base-{i}",
            cpu_millis=250,
            memory_bytes=256 * MiB,
            state=Container.State.RUNNING,
        )
        for i, node in enumerate(n for n in nodes if n.status == Node.Status.READY)
    ]
    Container.objects.bulk_create(running, batch_size=BATCH)
    return tenant, [(app, revision, spec) for (app, spec), revision in zip(specs, revisions[:APPS], strict=True)]


def _round(tenant, apps) -> dict[str, float | int]:
    from django.db import transaction

    from hivemind.applications.models import Container
    from hivemind.applications.scheduler import Placement, Request, nodes_for_scheduling, place
    from hivemind.core.bulk import insert_rows

    start = time.perf_counter()
    nodes = nodes_for_scheduling()
    loaded = time.perf_counter()
    requests = []
    for app, _revision, spec in apps:
        placement = Placement.from_spec(spec["placement"])  # once per app, shared by its replicas
        cpu, memory = spec["resources"]["cpu"], spec["resources"]["memory"]
        requests += [
            Request(tenant.slug, app.name, cpu, memory, tenant.isolation_level, placement, replica)
            for replica in range(REPLICAS)
        ]
    decisions = place(requests, nodes)
    placed = time.perf_counter()
    revisions = {app.name: (app, revision) for app, revision, _spec in apps}
    rows = []
    for decision in decisions:
        if decision.node_id is None:
            continue
        request = decision.request
        app, revision = revisions[request.app]
        rows.append(
            {
                "tenant_id": tenant.pk,
                "app_id": app.pk,
                "revision_id": revision.pk,
                "replica": request.replica,
                "node_id": decision.node_id,
                "name": f"{tenant.slug}-{app.name}-{request.replica}",
                "cpu_millis": request.cpu_millis,
                "memory_bytes": request.memory_bytes,
                "state": Container.State.PENDING,
            }
        )
    with transaction.atomic():  # as the plan step persists an app's placements
        insert_rows(Container, rows)
    persisted = time.perf_counter()
    unplaced = [d for d in decisions if not d.placed]
    Container.objects.filter(tenant=tenant).delete()  # the next round starts from the same cluster
    # The same rows the way the platform persisted them before (a model instance each, INSERTs
    # of BATCH rows), side by side in the same round.
    before = time.perf_counter()
    with transaction.atomic():
        Container.objects.bulk_create((Container(**row) for row in rows), batch_size=BATCH)
    bulk_create = time.perf_counter() - before
    Container.objects.filter(tenant=tenant).delete()
    return {
        "load": loaded - start,
        "place": placed - loaded,
        "persist": persisted - placed,
        "bulk_create": bulk_create,
        "total": persisted - start,
        "placed": len(rows),
        "unplaced": len(unplaced),
        "example": unplaced[0].explanation if unplaced else "",
    }


def _check(tenant, apps) -> None:
    """Place once outside the clock: no node ends over its capacity, the apps that require
    one replica per node got it, and every replica found a node."""
    from hivemind.applications.scheduler import Placement, Request, nodes_for_scheduling, place, place_reference

    nodes = nodes_for_scheduling()
    requests = [
        Request(tenant.slug, app.name, spec["resources"]["cpu"], spec["resources"]["memory"], tenant.isolation_level,
                Placement.from_spec(spec["placement"]), replica)
        for app, _revision, spec in apps for replica in range(REPLICAS)
    ]  # fmt: skip
    decisions = place(requests, nodes)
    cpu, memory = defaultdict(int), defaultdict(int)
    for decision in decisions:
        cpu[decision.node] += decision.request.cpu_millis
        memory[decision.node] += decision.request.memory_bytes
    over = [node.name for node in nodes if node.cpu_free < cpu[node.name] or node.memory_free < memory[node.name]]
    if len(decisions) != sum(d.placed for d in decisions):
        raise SystemExit(f"{len(decisions) - sum(d.placed for d in decisions)} replicas found no node")
    if over:
        raise SystemExit(f"over capacity after placing: {', '.join(over[:10])}")
    for app, _revision, spec in apps:
        if spec["placement"].get("anti_affinity"):
            hosts = [d.node for d in decisions if d.request.app == app.name]
            if len(set(hosts)) != len(hosts):
                raise SystemExit(f"{app.name} requires one replica per node but shares nodes")
    # The plain definition (every request scores every node) on the first replicas: the same
    # decisions, and how much slower it is.
    sample = requests[: 2 * REPLICAS]
    start = time.perf_counter()
    reference = place_reference(sample, nodes)
    elapsed = time.perf_counter() - start
    if reference != place(sample, nodes):
        raise SystemExit("place() and place_reference() disagree")
    rate = len(sample) / elapsed
    print(f"place_reference() on the first {len(sample)} replicas: {rate:.0f} placements/s, the same decisions")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        [refused] = place([Request(tenant.slug, "huge", 64000, 8 * GiB, tenant.isolation_level)], nodes)
        times.append(time.perf_counter() - start)
    ms = " ".join(f"{t * 1000:.0f}" for t in times)
    print(f"a replica no node can take, explained in {ms} ms (3 tries): {refused.explanation}")


def main() -> None:
    os.environ["HIVEMIND_DATABASE_URL"] = fresh_database("bench_scheduler", "bench/scheduler.py")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    setup = time.perf_counter()
    tenant, apps = _populate(random.Random(42))
    print(f"machine: {_machine()}, PostgreSQL {postgres}")
    print(f"cluster: {NODES} nodes, {APPS} apps x {REPLICAS} replicas; set up in {time.perf_counter() - setup:.1f} s")
    _check(tenant, apps)
    results = [_round(tenant, apps) for _ in range(ROUNDS + 1)][1:]  # the first warms caches up
    placed, unplaced = results[-1]["placed"], results[-1]["unplaced"]
    keys = ("load", "place", "persist", "total", "bulk_create")
    median = {key: statistics.median(r[key] for r in results) for key in keys}
    print(f"placed {placed}, unplaced {unplaced}" + (f" (e.g. {results[-1]['example']})" if unplaced else ""))
    print(f"{ROUNDS} rounds, medians:")
    rows = (
        ("load", "nodes_for_scheduling()", median["load"], False),
        ("place", "requests + place()", median["place"], True),
        ("persist", "insert_rows (COPY)", median["persist"], False),
        ("whole", "load + place + persist", median["total"], True),
        ("before", f"persist by bulk_create ({BATCH})", median["bulk_create"], False),
    )
    for label, what, seconds, rate in rows:
        line = f"  {label:<8} {what:<30} {seconds * 1000:7.0f} ms"
        print(line + (f"  {placed / seconds:7.0f} placements/s" if rate else ""))
    print(
        "target: >= 10000 placements/s for the whole; rounds (whole, s): "
        + " ".join(f"{r['total']:.2f}" for r in results)
    )


if __name__ == "__main__":
    main()
