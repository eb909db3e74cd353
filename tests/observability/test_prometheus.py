"""A real Prometheus (Debian's `prometheus`) scrapes the real web process with the configuration
`hivemind observability prometheus-config` prints, and answers PromQL with what the API and the
agent's samples say; the Grafana dashboard's every query names a metric /metrics serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
import requests
import yaml
from click.testing import CliRunner
from django.conf import settings

from hivemind.cli.main import cli
from hivemind.cli.observability import PANELS
from hivemind.nodes.agent import Agent
from observability.models import ContainerStat
from tenants import services as tenant_services
from tenants.models import Role
from tests.conftest import free_port, wait_for
from tests.observability.conftest import IDLE

PROMQL_WORDS = {
    "sum", "count", "by", "rate", "increase", "histogram_quantile", "label_values", "le", "avg", "max", "min",
}  # fmt: skip


PROMETHEUS_OWN = {
    "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}  # fmt: skip


def print_config(*args: str) -> dict:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


@pytest.fixture
def prometheus(tmp_path):
    """`start(config)` runs a real Prometheus with that configuration; returns its base URL."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing (apt-get install prometheus; make test-services installs it)"
    started = []

    def start(config: dict) -> str:
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        check = subprocess.run(
            [shutil.which("promtool"), "check", "config", str(path)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        port = free_port()
        process = subprocess.Popen(
            [
                binary, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("ab"),
        )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), 60, "Prometheus to be ready")
        return url

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def query(url: str, promql: str) -> list[dict]:
    answer = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def scalar(url: str, promql: str) -> float | None:
    result = query(url, promql)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_a_real_prometheus_scrapes_the_platform_and_a_tenant(web_server, world, node, replicas, prometheus, tmp_path):
    first, _ = replicas(IDLE)
    second, _ = replicas(IDLE)
    agent = Agent(node_name=node.name, docker_host=settings.DOCKER_HOST, address="10.0.0.1", labels={})
    try:
        agent.sample()
        time.sleep(1.5)
        assert agent.sample() == 2
    finally:
        agent.stop()
    account = tenant_services.service_account_create(
        tenant=world.a, name="prometheus", role=Role.VIEWER, actor=world.users["owner"]
    )
    _, token = tenant_services.api_token_create(user=account.user, name="scrape")
    token_file = tmp_path / "token"
    token_file.write_text(token)
    staff_file = tmp_path / "staff-token"
    staff_file.write_text(tenant_services.api_token_create(user=world.users["staff"], name="scrape")[1])
    platform = print_config(
        "--server", web_server, "observability", "prometheus-config", "--interval", "1s",
        "--token-file", str(staff_file),
    )  # fmt: skip
    own = print_config(
        "--server", web_server, "observability", "prometheus-config", "--interval", "1s",
        "--tenant", world.a.slug, "--token-file", str(token_file),
    )  # fmt: skip
    url = prometheus({"scrape_configs": platform["scrape_configs"] + own["scrape_configs"]})

    def scraped() -> bool:
        targets = requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return len(targets) == 2 and all(t["health"] == "up" for t in targets)

    wait_for(scraped, 60, "both jobs to be scraped")
    owner = world.client(Role.OWNER.value)
    (app,) = owner.get("/api/v1/apps/", {"name": replicas.app.name}).json()["results"]
    tenant, name = world.a.slug, replicas.app.name
    running = scalar(url, f'sum(hivemind_app_replicas_running{{job="hivemind",tenant="{tenant}",app="{name}"}})')
    assert running == app["running"] == 2
    for row in (first, second):
        memory = scalar(
            url,
            f'hivemind_container_memory_bytes{{job="hivemind",tenant="{tenant}",app="{name}",replica="{row.replica}"}}',
        )
        assert memory == ContainerStat.objects.get(container=row).memory_bytes > 0
    shown = owner.get(f"/api/v1/nodes/{node.name}/").json()
    assert shown["state"] == "ready" and scalar(url, f'hivemind_node_ready{{job="hivemind",node="{node.name}"}}') == 1
    assert scalar(url, f'hivemind_node_schedulable{{node="{node.name}"}}') == (1 if shown["schedulable"] else 0)
    # The tenant's own job: its series only, none of the platform's.
    scraped_series = query(url, f'{{job="hivemind-{tenant}"}}')
    # Prometheus's own series about the scrape (up, scrape_*) aside, every one is the tenant's.
    theirs = [r["metric"] for r in scraped_series if r["metric"]["__name__"] not in PROMETHEUS_OWN]
    assert len(theirs) >= 10 and {m.get("tenant") for m in theirs} == {tenant}
    assert scalar(url, f'sum(hivemind_app_replicas_running{{job="hivemind-{tenant}"}})') == 2
    assert query(url, f'hivemind_node_ready{{job="hivemind-{tenant}"}}') == []


def dashboard_metrics() -> set[str]:
    result = CliRunner().invoke(cli, ["observability", "grafana-dashboard"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    dashboard = json.loads(result.output)
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) == sum(len(queries) for _, panels in PANELS for _, _, queries in panels) >= 20
    names = set()
    for expr in exprs:
        # Matchers, ranges, strings and grouping labels out: what is left are functions and metrics.
        bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\bby\s*\([^)]*\)", "", expr)
        names |= {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare) if w not in PROMQL_WORDS}
    assert len(names) >= 20, names
    return {re.sub(r"_bucket$", "", name) for name in names}


def test_every_grafana_query_names_a_metric_the_platform_serves(web_server, world):
    requests.get(f"{web_server}/api/v1/health/", timeout=10)  # an HTTP request counted and timed
    token = tenant_services.api_token_create(user=world.users["staff"], name="scrape")[1]
    text = requests.get(f"{web_server}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30).text
    # Every family is described (HELP and TYPE) even before it has a series: a volume, say.
    served = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    served |= {f"{name}_total" for name in served} | {f"{name}_bucket" for name in served}
    missing = sorted(name for name in dashboard_metrics() if name not in served)
    assert missing == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "soon"], "--interval: expected a duration like 15s, 1m or 500ms, got 'soon'"),
        (["--tenant", "Acme Corp"], "--tenant: expected a tenant slug"),
        (["--tenant", "acme", "--token-file", "token"], "--token-file: expected an absolute path, got 'token'"),
        (["--token-file", "token"], "--token-file: expected an absolute path, got 'token'"),
    ],
)
def test_bad_flags_are_usage_errors_naming_them(args, message):
    result = CliRunner().invoke(cli, ["--server", "http://h:1", "observability", "prometheus-config", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_configs_are_what_prometheus_accepts_and_carry_no_token(tmp_path):
    platform = print_config("--server", "https://edge.example:8443/hm", "observability", "prometheus-config")
    (job,) = platform["scrape_configs"]
    assert (job["scheme"], job["metrics_path"], job["static_configs"]) == (
        "https", "/hm/metrics", [{"targets": ["edge.example:8443"]}]
    )  # fmt: skip
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/hivemind-token"}
    own = print_config("--server", "http://h:1", "--token", "secret-token", "observability", "prometheus-config",
                       "--tenant", "acme")  # fmt: skip
    assert "secret-token" not in json.dumps(own)
    assert own["scrape_configs"][0]["authorization"]["credentials_file"] == "/etc/prometheus/hivemind-token"
