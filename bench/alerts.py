"""Alert evaluation at the scale of the issue: 1,000 rules over the data of bench/metrics.py
(1,000 apps x 3 replicas on 50 nodes, 20 tenants), one pass as beat runs it. Target: < 2 s.

Makes a fresh PostgreSQL database next to the configured one, fills it with bench/metrics.py's
`populate()`, and adds 50 rules per tenant (plus 10 platform rules) in the mix a tenant would
write: windowed averages of a replica set's CPU by app, memory thresholds, replicas running
below desired (regular expressions over app names), restart increases, crash-looping replicas,
failed workflows and volumes almost full. Then BENCH_PASSES passes of `rules_evaluate(now=...)`,
15 s apart in the rules' time (so windowed rules reach their steady state of 20 samples per
series in 5 minutes); every 4th pass the containers' CPU moves so alerts fire and resolve.
Printed: each pass's seconds, p50 and max, the share spent collecting the metric families,
and the rows the windows keep.

Environment: BENCH_PASSES (30), and bench/metrics.py's BENCH_TENANTS, BENCH_APPS, BENCH_REPLICAS,
BENCH_NODES.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from support import fresh_database, percentile  # noqa: E402 - after the path is set

PASSES = int(os.environ.get("BENCH_PASSES", "30"))
RULES_PER_TENANT = 50


def rules_for(tenant, staff, apps: list[str]) -> list[dict]:
    """50 rules of one tenant, in the mix described above."""
    made = []
    for i in range(RULES_PER_TENANT):
        app = apps[i % len(apps)]
        kind = i % 10
        base = {"name": f"rule-{i:02d}", "for_seconds": 60}
        if kind in (0, 1, 2, 3):
            made.append({**base, "metric": "hivemind_container_cpu_millicores", "aggregation": "avg",
                         "window_seconds": 300, "by": ["app"], "comparison": ">", "threshold": 60,
                         "matchers": [{"label": "app", "op": "=", "value": app}],
                         "annotations": {"summary": "{{ labels.app }} uses {{ value }}m"}})  # fmt: skip
        elif kind in (4, 5):
            made.append({**base, "metric": "hivemind_container_memory_bytes", "comparison": ">",
                         "threshold": 1 << 30, "matchers": [{"label": "app", "op": "=", "value": app}]})  # fmt: skip
        elif kind == 6:
            made.append({**base, "metric": "hivemind_app_replicas_running", "comparison": "<", "threshold": 3,
                         "matchers": [{"label": "app", "op": "=~", "value": f"app-0{i % 5}.*"}]})  # fmt: skip
        elif kind == 7:
            made.append({**base, "metric": "hivemind_container_restarts_total", "aggregation": "increase",
                         "window_seconds": 600, "comparison": ">", "threshold": 3,
                         "matchers": [{"label": "app", "op": "=", "value": app}]})  # fmt: skip
        elif kind == 8:
            made.append({**base, "kind": "event", "event": "replica_crash_looping", "window_seconds": 600})
        else:
            event = "workflow_failed" if i % 20 == 9 else "volume_almost_full"
            made.append({**base, "kind": "event", "event": event})
    return made


def main() -> None:
    os.environ["HIVEMIND_DATABASE_URL"] = fresh_database("bench_alerts", "bench/alerts.py")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models.functions import Mod
    from django.utils import timezone
    from metrics import populate

    from alerting import services
    from alerting.models import Alert, AlertEvent, AlertRule, SeriesSample
    from hivemind.applications.models import App
    from observability import registry
    from observability.models import ContainerStat
    from tenants.models import Tenant

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    _tenant, staff = populate()
    populated = time.perf_counter() - began
    apps_of: dict[int, list[str]] = {}
    for tenant_id, name in App.objects.values_list("tenant_id", "name"):
        apps_of.setdefault(tenant_id, []).append(name)
    began = time.perf_counter()
    served = services.PassData(now=timezone.now()).served()
    tenants = list(Tenant.objects.all())
    for tenant in tenants:
        for values in rules_for(tenant, staff, sorted(apps_of.get(tenant.pk, ["none"]))):
            rule = AlertRule(tenant=tenant, created_by=staff, **services.rule_check(values=values, user=staff,
                                                                                   served=served))  # fmt: skip
            rule.save()
    first = tenants[0]
    for i in range(10):
        values = {"name": f"platform-{i}", "platform": True, "metric": "hivemind_node_cpu_used_ratio",
                  "comparison": ">", "threshold": 0.9, "for_seconds": 60}  # fmt: skip
        AlertRule.objects.create(tenant=first, created_by=staff, **services.rule_check(values=values, user=staff,
                                                                                       served=served))  # fmt: skip
    print(f"populated in {populated:.1f} s; {AlertRule.objects.count()} rules made in "
          f"{time.perf_counter() - began:.1f} s")  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    now = timezone.now()
    seconds, collecting = [], []
    for n in range(PASSES):
        if n % 4 == 3:  # the CPU of a tenth of the containers jumps, or comes back
            hot = 150 if (n // 4) % 2 == 0 else 20
            ContainerStat.objects.annotate(tenth=Mod("container_id", 10)).filter(tenth=0).update(cpu_millis=hot)
        started = time.perf_counter()
        families = registry.families()
        collected = time.perf_counter() - started
        result = services.rules_evaluate(now=now + timedelta(seconds=15 * n), families=families)
        total = collected + result["seconds"]
        seconds.append(total)
        collecting.append(collected)
        print(f"pass {n + 1:2d}: {total:6.3f} s (collecting {collected:5.3f} s)  {result['rules']} rules, "
              f"{result['errors']} errors, {result['alerts_changed']} alerts changed, "
              f"{result['events']} events")  # fmt: skip
    steady = seconds[PASSES // 2 :]
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the end")
    print(f"one pass of {AlertRule.objects.count()} rules: p50 {statistics.median(seconds):.3f} s, "
          f"p99 {percentile(seconds, 99):.3f} s, max {max(seconds):.3f} s; second half (windows full) p50 "
          f"{statistics.median(steady):.3f} s; collecting the families p50 "
          f"{statistics.median(collecting):.3f} s")  # fmt: skip
    print(f"kept: {SeriesSample.objects.count()} window samples, {Alert.objects.count()} alerts, "
          f"{AlertEvent.objects.count()} history rows")  # fmt: skip


if __name__ == "__main__":
    main()
