"""/metrics as Prometheus reads it: route labels are templates, and promtool finds nothing wrong."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from hivemind.core.metrics import route_template
from tests.conftest import REPO

# What a regular expression leaves in a label: groups, anchors, classes, escapes.
REGEX_MARKS = re.compile(r"[()^$\[\]\\?*+|]")


@pytest.mark.parametrize(
    ("pattern", "template"),
    [
        (r"api/v1/workflows/(?P<pk>[^/.]+)/$", "/api/v1/workflows/{id}/"),
        (r"^api/v1/apps/(?P<pk>[^/.]+)/logs\.(?P<format>[a-z0-9]+)/?$", "/api/v1/apps/{id}/logs.{format}/"),
        ("api/v1/tenants/<slug:slug>/", "/api/v1/tenants/{slug}/"),
        (r"^api/v1/tenants/(?P<slug>[^/.]+)/usage/$", "/api/v1/tenants/{slug}/usage/"),
        ("metrics", "/metrics"),
    ],
)
def test_route_template(pattern, template):
    assert route_template(pattern) == template


def readme_metrics() -> list[str]:
    """The metric names of the README's table (`process_*` and `python_gc_*` as prefixes)."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| metric | labels | what |") :].split("\n\n", 1)[0]
    names = []
    for line in table.splitlines()[2:]:
        names += re.findall(r"`([a-z_]+\*?)`", line.split("|")[1])
    return names


def missing_from(text: str, names: list[str]) -> list[str]:
    """The names of `names` that `text` (an exposition) has no family of."""
    families = {family.name for family in text_string_to_metric_families(text)}
    families |= {f"{name}_total" for name in families}  # the parser drops a counter's _total
    return [
        name
        for name in names
        if not (any(f.startswith(name[:-1]) for f in families) if name.endswith("*") else name in families)
    ]


def _route_labels(text: str) -> set[str]:
    return {
        sample.labels["route"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "route" in sample.labels
    }


def promtool_check(text: str) -> str:
    """`promtool check metrics` on an exposition; returns what it complained of ("" when clean)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (apt-get install prometheus; make test-services installs it)"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    return (result.stdout + result.stderr).strip() if result.returncode else ""


@pytest.mark.django_db
def test_metrics_label_routes_with_templates_and_pass_promtool(world):
    client = world.client("owner")
    for path in (
        "/api/v1/health/",
        "/api/v1/apps/",
        "/api/v1/workflows/999999/",  # a 404 keeps the route it matched
        f"/api/v1/tenants/{world.a.slug}/",
        f"/api/v1/tenants/{world.a.slug}/usage/",
        "/api/v1/no-such-thing/",
    ):
        client.get(path)
    text = APIClient().get("/metrics").content.decode()
    routes = _route_labels(text)
    assert {
        "/api/v1/health/",
        "/api/v1/apps/",
        "/api/v1/workflows/{id}/",
        "/api/v1/tenants/{slug}/",
        "/api/v1/tenants/{slug}/usage/",
        "<unmatched>",
    } <= routes
    assert not [route for route in routes if REGEX_MARKS.search(route)]
    assert "python_gc_objects_collected_total" in text  # README promises GC metrics
    assert "process_cpu_seconds_total" in text
    # What the README lists, but the supervisor's (they need `make run`: tests/e2e/test_make_run.py).
    listed = [name for name in readme_metrics() if not name.startswith("hivemind_process_")]
    assert len(listed) >= 6 and missing_from(text, listed) == []
    assert promtool_check(text) == ""


@pytest.fixture
def multiprocess_env(subprocess_env, tmp_path):
    """The web process as `manage.py up` runs it: metrics in multiprocess mode."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    subprocess_env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return subprocess_env


def test_metrics_of_the_real_web_process_in_multiprocess_mode(multiprocess_env, web_server):
    for path in ("/api/v1/health/", "/api/v1/workflows/1/", "/admin/login/"):
        requests.get(web_server + path, timeout=30)
    text = requests.get(f"{web_server}/metrics", timeout=30).text
    routes = _route_labels(text)
    assert {"/api/v1/health/", "/api/v1/workflows/{id}/", "/admin/login/"} <= routes
    assert not [route for route in routes if REGEX_MARKS.search(route)]
    assert "python_gc_objects_collected_total" in text
    assert "process_resident_memory_bytes" in text
    assert promtool_check(text) == ""


@pytest.mark.django_db(transaction=True)
def test_the_web_runs_a_process_per_core_and_metrics_add_them_all_up(multiprocess_env, tmp_path):
    """The web as `manage.py up` starts it: HIVEMIND_WEB_WORKERS processes (one per core unless
    set); whichever answers /metrics counts the requests every one of them served."""
    import os
    import sys
    import time
    from pathlib import Path

    from django.conf import settings
    from django.db import connection

    from hivemind.config import load_config
    from hivemind.core import bootstrap
    from hivemind.core.processes import process_spec
    from tests.conftest import free_port

    assert load_config({"HIVEMIND_VAR_DIR": str(tmp_path)}).web_workers == len(os.sched_getaffinity(0))
    port = free_port()
    db = connection.settings_dict
    multiprocess_env.update(
        HIVEMIND_DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        HIVEMIND_VAR_DIR=str(tmp_path / "web"),
        HIVEMIND_SECRET_KEY=settings.SECRET_KEY,
        HIVEMIND_WEB_BIND=f"127.0.0.1:{port}",
        HIVEMIND_WEB_WORKERS="3",
    )
    spec = process_spec("web", config=load_config(multiprocess_env), bindir=str(Path(sys.executable).parent))
    log = tmp_path / "web.log"
    process = subprocess.Popen(
        spec.argv, cwd=REPO, env=multiprocess_env, stdout=subprocess.DEVNULL, stderr=log.open("ab"),
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/admin/login/", timeout=10)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.2)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert len(children) == 3, children
        for _ in range(60):  # a new connection each: the master's socket hands them to any worker
            assert requests.get(f"{base}/admin/login/", timeout=30, headers={"Connection": "close"}).ok
        served = {f.name.split("_")[-1] for f in Path(multiprocess_env["PROMETHEUS_MULTIPROC_DIR"]).glob("counter_*")}
        assert len(served) >= 2, served  # more than one worker answered
        for _ in range(6):  # any of them answers /metrics with the total
            text = requests.get(f"{base}/metrics", timeout=30, headers={"Connection": "close"}).text
            counted = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "hivemind_http_requests_total" and sample.labels.get("route") == "/admin/login/"
            )
            assert counted == 61, counted  # and the first, which waited for the start
    finally:
        bootstrap.LocalService("web", base, process).stop(timeout=10)
        connection.close()
