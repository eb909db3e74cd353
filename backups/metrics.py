"""Backup figures on /metrics, read from the Backup and BackupPolicy rows at each scrape.
Labels are names Hivemind validated as DNS labels (tenant slugs, location and policy names;
a platform location's is `platform:<name>`, so it never merges with a tenant location of the
same name): the series are bounded by the objects that exist.

- hivemind_backup_last_duration_seconds {tenant, location}: the last finished run's duration
- hivemind_backup_last_bytes_read {tenant, location}: what it read
- hivemind_backup_last_bytes_new {tenant, location}: what it stored that the repository lacked
- hivemind_backup_last_dedup_ratio {tenant, location}: read / new (new counted as at least 1)
- hivemind_backup_last_success_timestamp_seconds {tenant, location, policy}: a policy's last
  successful run (absent before the first)
- hivemind_backup_failed_runs {tenant, location}: failed runs whose records exist
- hivemind_backup_runs {tenant, location, status}: runs by status (pending, running, ...)
- hivemind_backup_damaged {tenant, location}: backups their last verification found damaged
- hivemind_backup_last_verified_timestamp_seconds {tenant, location}: the location's last
  verification (absent before the first)
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily


class BackupCollector:
    by_tenant = True

    def describe(self) -> Iterable:
        return []

    def collect(self, tenant: str | None = None) -> Iterable:
        from django.db.models import Count, Max, Q

        from backups.models import Backup, BackupPolicy

        labels = ["tenant", "location"]
        duration = GaugeMetricFamily(
            "hivemind_backup_last_duration_seconds", "The last finished backup run's duration.", labels=labels
        )
        read = GaugeMetricFamily("hivemind_backup_last_bytes_read", "Bytes the last finished backup run read.",
                                 labels=labels)  # fmt: skip
        new = GaugeMetricFamily("hivemind_backup_last_bytes_new",
                                "Bytes the last finished backup run stored that the repository did not hold yet.",
                                labels=labels)  # fmt: skip
        ratio = GaugeMetricFamily(
            "hivemind_backup_last_dedup_ratio",
            "The last finished backup run's bytes read per new byte stored.",
            labels=labels,
        )
        success = GaugeMetricFamily("hivemind_backup_last_success_timestamp_seconds",
                                    "When a backup policy's last run succeeded (Unix time).",
                                    labels=["tenant", "location", "policy"])  # fmt: skip
        failed = GaugeMetricFamily("hivemind_backup_failed_runs", "Failed backup runs whose records exist.",
                                   labels=labels)  # fmt: skip
        runs = GaugeMetricFamily("hivemind_backup_runs", "Backup runs whose records exist, by status.",
                                 labels=[*labels, "status"])  # fmt: skip
        damaged = GaugeMetricFamily("hivemind_backup_damaged",
                                    "Backups their last verification found damaged.", labels=labels)  # fmt: skip
        verified = GaugeMetricFamily("hivemind_backup_last_verified_timestamp_seconds",
                                     "When a backup of the location was last verified (Unix time).",
                                     labels=labels)  # fmt: skip
        backups = Backup.objects.annotate(where=location_label("location__"))
        policies = BackupPolicy.objects.filter(last_success_at__isnull=False).annotate(
            where=location_label("location__")
        )
        if tenant is not None:
            backups, policies = backups.filter(tenant__slug=tenant), policies.filter(tenant__slug=tenant)
        counted = backups.values_list("tenant__slug", "where", "status").annotate(n=Count("pk"))
        for slug, location, status, count in counted.order_by():
            runs.add_metric([slug, location, status], count)
            if status == Backup.Status.FAILED:
                failed.add_metric([slug, location], count)
        checks = backups.exclude(verified_at=None).values_list("tenant__slug", "where")
        for slug, location, count, last in checks.annotate(
            damaged=Count("pk", filter=Q(verified=Backup.Verified.DAMAGED)), last=Max("verified_at")
        ).order_by():
            damaged.add_metric([slug, location], count)
            verified.add_metric([slug, location], last.timestamp())
        # each tenant's last finished run into each location: two queries, however many runs are kept
        done = backups.filter(status=Backup.Status.SUCCEEDED, finished_at__isnull=False, started_at__isnull=False)
        latest = Q(pk__in=[])
        for row in done.values("tenant", "location").annotate(last=Max("finished_at")).order_by():
            latest |= Q(tenant=row["tenant"], location=row["location"], finished_at=row["last"])
        finished = {
            (slug, where): (started, ended, bytes_read, bytes_new)
            for slug, where, started, ended, bytes_read, bytes_new in done.filter(latest)
            .order_by("pk")
            .values_list("tenant__slug", "where", "started_at", "finished_at", "bytes_read", "bytes_new")
        }  # a tie at one instant: the newest row
        finished = [(*key, *values) for key, values in sorted(finished.items())]
        for slug, location, started, ended, bytes_read, bytes_new in finished:
            duration.add_metric([slug, location], (ended - started).total_seconds())
            read.add_metric([slug, location], bytes_read)
            new.add_metric([slug, location], bytes_new)
            ratio.add_metric([slug, location], bytes_read / max(bytes_new, 1))
        for slug, location, policy, last in policies.values_list("tenant__slug", "where", "name",
                                                                  "last_success_at"):  # fmt: skip
            success.add_metric([slug, location, policy], last.timestamp())
        return [duration, read, new, ratio, success, failed, runs, damaged, verified]


PLATFORM_LABEL = "platform:"


def location_label(path: str = ""):
    """A location's label value as an expression: its name, or `platform:<name>` for a platform
    location (`path`: the lookup to the location, e.g. "location__")."""
    from django.db.models import Case as Choose
    from django.db.models import CharField, F, Value, When
    from django.db.models.functions import Concat

    platform = When(**{f"{path}tenant__isnull": True}, then=Concat(Value(PLATFORM_LABEL), F(f"{path}name")))
    return Choose(platform, default=F(f"{path}name"), output_field=CharField())
