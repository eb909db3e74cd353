"""What the usage history costs: rows and bytes per replica per day of the raw samples (every
HIVEMIND_SAMPLE_INTERVAL, 15 s) and of the rollups (1-minute and 10-minute periods), and the
time beat's rollup pass takes.

Makes a fresh PostgreSQL database next to the configured one, fills a day of 15-second samples
for BENCH_REPLICAS replicas, rolls them up as beat would (a pass per simulated minute would be
1,440 passes: the bench runs catch-up passes, CATCH_UP minutes each, and times them), then reads
PostgreSQL's sizes of both tables (heap, indexes and TOAST) after VACUUM ANALYZE.

Environment: BENCH_REPLICAS (50).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fresh_database  # noqa: E402 - after the path is set

REPLICAS = int(os.environ.get("BENCH_REPLICAS", "50"))
DAY = datetime(2026, 11, 1, tzinfo=UTC)


def main() -> None:
    os.environ["HIVEMIND_DATABASE_URL"] = fresh_database("bench_history", "bench/usage_history.py")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from hivemind.applications.models import App
    from observability import rollups
    from observability.models import UsageRollup, UsageSample
    from tenants import services

    call_command("migrate", verbosity=0)
    staff = get_user_model().objects.create_user("bench-staff", is_staff=True)
    tenant = services.tenant_create(name="Bench", slug="bench", created_by=staff)
    app = App.objects.create(tenant=tenant, name="web", service_name="web", replicas=REPLICAS)
    per_day = 86400 // 15
    for replica in range(REPLICAS):
        UsageSample.objects.bulk_create(
            (UsageSample(at=DAY + timedelta(seconds=15 * i), tenant=tenant, app=app, replica=replica,
                         container_name=f"hm-bench-web-{replica}", cpu_millis=100 + (i * 7 + replica) % 50,
                         memory_bytes=(64 << 20) + i) for i in range(per_day)),
            batch_size=5000,
        )  # fmt: skip
    passes, started = 0, time.perf_counter()
    now = DAY + timedelta(days=1, minutes=1)
    while rollups.rollup(now=now)["1m"]:
        passes += 1
    elapsed = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        sizes = {}
        for model in (UsageSample, UsageRollup):
            cursor.execute("SELECT pg_total_relation_size(%s)", [model._meta.db_table])
            sizes[model] = cursor.fetchone()[0]
    raw = UsageSample.objects.count()
    minute = UsageRollup.objects.filter(resolution=60).count()
    ten = UsageRollup.objects.filter(resolution=600).count()
    print(f"machine: {os.cpu_count()} cores; {REPLICAS} replicas, one day of 15-second samples")
    raw_kib, rollup_kib = sizes[UsageSample] / REPLICAS / 1024, sizes[UsageRollup] / REPLICAS / 1024
    print(f"raw samples   {raw / REPLICAS:7.0f} rows/replica/day  {raw_kib:8.1f} KiB/replica/day"
          f"  ({sizes[UsageSample] / raw:.0f} B/row)")  # fmt: skip
    print(f"rollups       {(minute + ten) / REPLICAS:7.0f} rows/replica/day  {rollup_kib:8.1f} KiB/replica/day"
          f"  ({minute // REPLICAS} of 1 minute, {ten // REPLICAS} of 10 minutes;"
          f" {sizes[UsageRollup] / (minute + ten):.0f} B/row)")  # fmt: skip
    print(f"rollup passes: {passes} catch-up passes of up to {rollups.CATCH_UP} minutes in {elapsed:.1f} s "
          f"({elapsed / passes * 1000 / rollups.CATCH_UP * 1:.1f} ms per minute of {REPLICAS} replicas)")  # fmt: skip


if __name__ == "__main__":
    main()
