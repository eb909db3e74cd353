"""IPAM under concurrency: 20 clients creating dual-stack networks at once, on PostgreSQL.

Makes a fresh PostgreSQL database next to the configured one (`<name>_ipam`, dropped again at
the end), migrates it, and makes BENCH_TENANTS (20) tenants without a network quota. The
default IPv4 and IPv6 pools are made before timing (HIVEMIND_IPV4_POOL, default
10.128.0.0/12 -> 4,096 /24s; a random ULA /48 -> 65,536 /64s). Each round, BENCH_CLIENTS (20)
threads, each with its own database connection, call `networking.services.network_create`
(IPv4 /24 + IPv6 /64, quota reservation, audit row: what `hivemind network create` does) in
a closed loop, BENCH_NETWORKS (1,000) networks in all; client c's k-th network goes to tenant
(c + k) mod BENCH_TENANTS, so clients meet on tenants as well as on the pools. Every creation
locks the pool rows (`select_for_update`) until its transaction commits: the pools are the
point where all creations queue.

Prints per round and as medians over BENCH_ROUNDS (3): networks/s (networks / wall time) and
the p50 and p99 of one creation's latency, also for the first and last tenth of a round (a
free prefix is found by reading the pool's networks, so the cost grows with how full it is).
After each round it checks, in the database, that every network has a VNI, an IPv4 and an
IPv6 prefix, that no prefix and no VNI is held twice, and that no two prefixes overlap; times
`ipam.free_prefix` in each pool as full as the round left it (the search done while the pool
row is locked); and deletes the round's networks, reservations and audit rows, so every
round starts from empty pools. The clients are threads of one interpreter: their Python work
shares one interpreter lock, as the threads of one gunicorn worker do.

Environment: BENCH_CLIENTS (20), BENCH_TENANTS (20), BENCH_NETWORKS (1000), BENCH_ROUNDS (3).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt, fresh_database  # noqa: E402 - after the path is set

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "20"))
TENANTS = int(os.environ.get("BENCH_TENANTS", "20"))
NETWORKS = int(os.environ.get("BENCH_NETWORKS", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(len(ordered) * fraction + 0.5) - 1, 0)]


def _round(number: int, tenants: list) -> dict:
    """One round: CLIENTS threads, NETWORKS creations; returns the figures."""
    from django.db import connection

    from networking.services import network_create

    share = [NETWORKS // CLIENTS + (1 if c < NETWORKS % CLIENTS else 0) for c in range(CLIENTS)]
    latencies: list[tuple[float, float]] = []  # (finished at, seconds)
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS + 1)

    def client(c: int) -> None:
        try:
            connection.ensure_connection()  # this thread's own connection, opened before the start
            barrier.wait()
            for k in range(share[c]):
                tenant = tenants[(c + k) % len(tenants)]
                started = time.perf_counter()
                try:
                    network_create(tenant=tenant, name=f"r{number}-c{c}-n{k}", actor=None)
                except Exception as exc:  # counted and shown: the check below fails the run
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                now = time.perf_counter()
                with lock:
                    latencies.append((now, now - started))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} creations failed, e.g. {errors[0]}")
    latencies.sort()
    ms = [seconds * 1000 for _, seconds in latencies]
    tenth = max(len(ms) // 10, 1)
    return {
        "rate": len(ms) / elapsed,
        "elapsed": elapsed,
        "p50": statistics.median(ms),
        "p99": _percentile(ms, 0.99),
        "first_p50": statistics.median(ms[:tenth]),
        "last_p50": statistics.median(ms[-tenth:]),
    }


def _check() -> int:
    """Every network whole, nothing held twice, no overlap; returns how many networks there are."""
    from django.db.models import Count

    from networking.models import Network

    networks = Network.objects.all()
    for field in ("vni", "subnet4", "subnet6"):
        if networks.filter(**{f"{field}__isnull": True}).exists():
            raise SystemExit(f"a network has no {field}")
        twice = networks.values(field).annotate(n=Count("pk")).filter(n__gt=1)
        if twice.exists():
            raise SystemExit(f"held twice: {field} {list(twice[:5])}")
    for field in ("subnet4", "subnet6"):
        prefixes = sorted(ipaddress.ip_network(value) for value in networks.values_list(field, flat=True))
        for before, after in itertools.pairwise(prefixes):
            if before.overlaps(after):
                raise SystemExit(f"overlapping prefixes: {before} and {after}")
    return networks.count()


def _free_prefix_ms(pools: list) -> list[float]:
    """How long finding the next free prefix takes in each pool as full as it is now (median of 5):
    the part of a creation done while the pool row is locked, besides the writes."""
    from networking import ipam

    times = []
    for pool in pools:
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            ipam.free_prefix(pool, pool.default_prefix)
            runs.append((time.perf_counter() - started) * 1000)
        times.append(statistics.median(runs))
    return times


def _clear() -> None:
    from networking.models import Network
    from tenants.models import AuditEvent, QuotaReservation, TenantUsage

    Network.objects.all().delete()
    QuotaReservation.objects.all().delete()
    TenantUsage.objects.update(networks=0)
    AuditEvent.objects.filter(action__in=("network.create", "quota.reserve")).delete()


def _drop(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.strip("/")}"')


def main() -> None:
    url = fresh_database("ipam", "bench/ipam.py")
    os.environ["HIVEMIND_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    from networking import ipam
    from tenants.models import TenantQuota
    from tenants.services import tenant_create

    try:
        call_command("migrate", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            postgres = cursor.fetchone()[0]
        tenants = [tenant_create(name=f"T{t}", slug=f"t{t:02d}", created_by=None) for t in range(TENANTS)]
        TenantQuota.objects.filter(tenant__in=tenants).update(networks=None)
        pools = [ipam.default_pool(4), ipam.default_pool(6)]
        print(
            f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, PostgreSQL {postgres}; "
            f"pools {pools[0].cidr} and {pools[1].cidr}",
            flush=True,
        )
        print(f"{CLIENTS} clients, {TENANTS} tenants, {NETWORKS} dual-stack networks per round", flush=True)
        results = []
        for number in range(1, ROUNDS + 1):
            result = _round(number, tenants)
            count = _check()
            free4, free6 = _free_prefix_ms(pools)
            if count != NETWORKS:
                raise SystemExit(f"round {number}: {count} networks in the database, expected {NETWORKS}")
            print(
                f"round {number}: {result['rate']:6.1f} networks/s ({result['elapsed']:.2f} s)  "
                f"p50 {result['p50']:6.1f} ms  p99 {result['p99']:6.1f} ms  "
                f"(p50 first tenth {result['first_p50']:.1f} ms, last tenth {result['last_p50']:.1f} ms); "
                f"checked: {count} networks, no prefix or VNI twice, no overlap; "
                f"free_prefix() now {free4:.1f} ms (v4) + {free6:.1f} ms (v6)",
                flush=True,
            )
            results.append(result)
            _clear()
        median = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(f"{ROUNDS} rounds, medians:")
        print(f"  networks/s  {median['rate']:7.1f}   [{fmt([r['rate'] for r in results])}]")
        print(f"  p50         {median['p50']:7.1f} ms  [{fmt([r['p50'] for r in results])}]")
        print(f"  p99         {median['p99']:7.1f} ms  [{fmt([r['p99'] for r in results])}]")
    finally:
        connections.close_all()
        _drop(url)


if __name__ == "__main__":
    main()
