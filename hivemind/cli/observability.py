"""`hivemind observability`: files for the tools around Hivemind — a Prometheus scrape
configuration and a Grafana dashboard. Both are made here, from the server address of the
current context (or --server); neither needs a token, and neither prints one."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import click
import yaml

from hivemind.cli.errors import usage_error
from hivemind.cli.output import examples
from hivemind.cli.session import Session, pass_session

DURATION = re.compile(r"^[1-9][0-9]{0,5}(ms|s|m|h)$")
SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_TOKEN_FILE = "/etc/prometheus/hivemind-token"  # noqa: S105 - a path, not a secret


def scrape_config(server: str, *, tenant: str | None, token_file: str, interval: str) -> dict:
    """Prometheus's `scrape_configs` for the platform's /metrics (a staff user's token), or (with
    `tenant`) for that tenant's own series at /api/v1/metrics/ (a token of the tenant's); the
    bearer token is read from `token_file` by Prometheus."""
    parts = urlsplit(server)
    base = {
        "scheme": parts.scheme,
        "scrape_interval": interval,
        "authorization": {"type": "Bearer", "credentials_file": token_file},
        "static_configs": [{"targets": [parts.netloc]}],
    }
    prefix = parts.path.rstrip("/")
    if tenant is None:
        job = {"job_name": "hivemind", "metrics_path": f"{prefix}/metrics", **base}
    else:
        job = {
            "job_name": f"hivemind-{tenant}",
            "metrics_path": f"{prefix}/api/v1/metrics/",
            "params": {"tenant": [tenant]},
            **base,
        }
    return {"scrape_configs": [job]}


@click.group(
    epilog=examples(
        "hivemind observability prometheus-config > /etc/prometheus/hivemind.yml",
        "hivemind observability grafana-dashboard > hivemind-dashboard.json",
    )
)
def observability() -> None:
    """Files for Prometheus and Grafana: a scrape configuration and a dashboard.

    /metrics serves the whole platform (nodes, containers, apps, networks, volumes,
    workflows) to platform staff's tokens, and only the processes' own metrics to anyone
    else; /api/v1/metrics/ serves one tenant's series only, to a token of that tenant (a
    viewer service account's, say). Every agent reports through the database, so Prometheus
    scrapes the web process only: no per-node targets.
    """


@observability.command(
    "prometheus-config",
    epilog=examples(
        "hivemind observability prometheus-config > /etc/prometheus/hivemind.yml",
        "hivemind observability prometheus-config --tenant acme --token-file /etc/prometheus/acme-token",
    ),
)
@click.option("--tenant", help="a tenant's own series (/api/v1/metrics/) instead of the platform's /metrics")
@click.option(
    "--token-file",
    default=DEFAULT_TOKEN_FILE,
    show_default=True,
    help="where Prometheus reads the API token it sends: a staff user's, or with --tenant one of that tenant's;"
    " the token is never printed",
)
@click.option("--interval", default="15s", show_default=True, help="scrape interval (e.g. 15s, 1m)")
@pass_session
def prometheus_config(session: Session, tenant: str | None, token_file: str, interval: str) -> None:
    """Print a Prometheus scrape configuration for this server (YAML, `scrape_configs`)."""
    if not DURATION.match(interval):
        raise usage_error(f"--interval: expected a duration like 15s, 1m or 500ms, got {interval!r}")
    if tenant is not None and not SLUG.match(tenant):
        raise usage_error(f"--tenant: expected a tenant slug (lowercase letters, digits, dashes), got {tenant!r}")
    if not token_file.startswith("/"):
        raise usage_error(f"--token-file: expected an absolute path, got {token_file!r}")
    config = scrape_config(session.server(), tenant=tenant, token_file=token_file, interval=interval)
    click.echo(yaml.safe_dump(config, sort_keys=False), nl=False)


# The dashboard: (title, unit, [PromQL]) per panel, grouped in rows. Every metric named here is
# one /metrics serves (tests/observability/test_prometheus.py checks each against a scrape).
PANELS: list[tuple[str, list[tuple[str, str, list[str]]]]] = [
    (
        "Nodes",
        [
            ("Nodes ready", "none", ["sum(hivemind_node_ready)", "count(hivemind_node_ready)"]),
            ("CPU busy", "percentunit", ["hivemind_node_cpu_used_ratio"]),
            ("Load (1 min)", "none", ["hivemind_node_load1"]),
            ("Memory available", "bytes", ["hivemind_node_memory_available_bytes"]),
            ("Disk free", "bytes", ["hivemind_node_disk_free_bytes"]),
            ("Containers", "none", ["sum by (node, state) (hivemind_node_containers)"]),
        ],
    ),
    (
        "Apps",
        [
            (
                "Replicas running / desired",
                "none",
                [
                    'sum by (app) (hivemind_app_replicas_running{tenant=~"$tenant"})',
                    'sum by (app) (hivemind_app_replicas_desired{tenant=~"$tenant"})',
                ],
            ),
            ("Replicas healthy", "none", ['sum by (app) (hivemind_app_replicas_healthy{tenant=~"$tenant"})']),
            ("CPU", "none", ['sum by (app) (hivemind_container_cpu_millicores{tenant=~"$tenant"})']),
            ("Memory", "bytes", ['sum by (app) (hivemind_container_memory_bytes{tenant=~"$tenant"})']),
            (
                "Network",
                "Bps",
                [
                    'sum by (app) (rate(hivemind_container_network_receive_bytes_total{tenant=~"$tenant"}[5m]))',
                    'sum by (app) (rate(hivemind_container_network_transmit_bytes_total{tenant=~"$tenant"}[5m]))',
                ],
            ),
            (
                "Block I/O",
                "Bps",
                [
                    'sum by (app) (rate(hivemind_container_block_read_bytes_total{tenant=~"$tenant"}[5m]))',
                    'sum by (app) (rate(hivemind_container_block_write_bytes_total{tenant=~"$tenant"}[5m]))',
                ],
            ),
            ("Restarts", "none", ['sum by (app) (increase(hivemind_container_restarts_total{tenant=~"$tenant"}[1h]))']),
        ],
    ),
    (
        "Networks and storage",
        [
            (
                "Network traffic",
                "Bps",
                ['sum by (network, direction) (rate(hivemind_network_bytes_total{tenant=~"$tenant"}[5m]))'],
            ),
            ("Dropped packets", "pps", ["sum by (network) (rate(hivemind_network_dropped_packets_total[5m]))"]),
            (
                "Volume used",
                "percentunit",
                ['hivemind_volume_used_bytes{tenant=~"$tenant"} / hivemind_volume_size_bytes'],
            ),
            ("Pool free", "bytes", ["hivemind_storage_pool_free_bytes"]),
            ("Replication lag", "s", ['hivemind_volume_replication_lag_seconds{tenant=~"$tenant"}']),
        ],
    ),
    (
        "Control plane",
        [
            ("Failed workflows", "none", ["sum by (kind) (increase(hivemind_workflows_failed_total[1h]))"]),
            ("API requests", "reqps", ["sum by (status) (rate(hivemind_http_requests_total[5m]))"]),
            (
                "API latency p99",
                "s",
                ["histogram_quantile(0.99, sum by (le) (rate(hivemind_http_request_duration_seconds_bucket[5m])))"],
            ),
        ],
    ),
]


def grafana_dashboard(datasource: str) -> dict:
    """A Grafana dashboard (schema 39) over the Prometheus data source named `datasource`."""
    source = {"type": "prometheus", "uid": "${datasource}"}
    panels, y, next_id = [], 0, 1
    for row_title, row_panels in PANELS:
        panels.append(
            {"type": "row", "title": row_title, "id": next_id, "collapsed": False,
             "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}
        )  # fmt: skip
        next_id, y = next_id + 1, y + 1
        for index, (title, unit, queries) in enumerate(row_panels):
            panels.append(
                {
                    "type": "timeseries",
                    "title": title,
                    "id": next_id,
                    "datasource": source,
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "gridPos": {"h": 8, "w": 8, "x": (index % 3) * 8, "y": y + (index // 3) * 8},
                    "targets": [
                        {"refId": chr(ord("A") + n), "datasource": source, "expr": expr}
                        for n, expr in enumerate(queries)
                    ],
                }
            )
            next_id += 1
        y += 8 * ((len(row_panels) + 2) // 3)
    return {
        "title": "Hivemind",
        "uid": "hivemind",
        "schemaVersion": 39,
        "tags": ["hivemind"],
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {"text": datasource}},
                {
                    "name": "tenant",
                    "type": "query",
                    "datasource": source,
                    "query": "label_values(hivemind_app_replicas_desired, tenant)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                },
            ]
        },
        "panels": panels,
    }


@observability.command(
    "grafana-dashboard",
    epilog=examples(
        "hivemind observability grafana-dashboard > hivemind-dashboard.json",
        "hivemind observability grafana-dashboard --datasource Prometheus-edge",
    ),
)
@click.option("--datasource", default="Prometheus", show_default=True, help="the Prometheus data source's name")
def grafana_dashboard_command(datasource: str) -> None:
    """Print a Grafana dashboard (JSON) of nodes, apps, networks, storage and the control plane."""
    if not datasource.strip():
        raise usage_error("--datasource: expected a data source name, got an empty one")
    click.echo(json.dumps(grafana_dashboard(datasource), indent=2))
