"""GET /api/v1/health/ against real parts, each brought up and then taken down."""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from hivemind.core import bootstrap
from tests.conftest import free_port

pytestmark = pytest.mark.django_db

URL = "/api/v1/health/"


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def test_all_parts_up(api, docker_daemon):
    response = api.get(URL)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "up"
    assert body["down"] == []
    assert body["database"]["vendor"] == "postgresql"
    assert body["broker"]["status"] == "up"
    node = body["docker"][settings.NODE_NAME]
    assert node["status"] == "up"
    assert node["api_version"]


def test_broker_up_then_down(api, docker_daemon, tmp_path, settings):
    url = f"redis://127.0.0.1:{free_port()}/0"
    redis = bootstrap.ensure_redis(url, tmp_path)
    assert redis.started_here
    settings.CELERY_BROKER_URL = url
    try:
        assert api.get(URL).status_code == 200
    finally:
        redis.stop()
    response = api.get(URL)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["down"] == ["broker"]
    assert body["broker"]["status"] == "down"
    assert "refused" in body["broker"]["error"].lower()
    assert body["docker"][settings.NODE_NAME]["status"] == "up"


def test_docker_up_then_down(api, tmp_path, settings):
    # A second, private daemon that the test can stop without disturbing the others.
    root = tmp_path / "d"
    endpoint = f"unix://{root / 'docker.sock'}"
    daemon = bootstrap.ensure_dockerd(endpoint, root, own_bridge=False)
    assert daemon.started_here
    settings.DOCKER_HOST = endpoint
    try:
        response = api.get(URL)
        assert response.status_code == 200, response.json()
        assert response.json()["docker"][settings.NODE_NAME]["endpoint"] == endpoint
    finally:
        daemon.stop()
    response = api.get(URL)
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == [f"docker:{settings.NODE_NAME}"]
    assert body["docker"][settings.NODE_NAME]["status"] == "down"
    assert body["docker"][settings.NODE_NAME]["error"]
    assert body["broker"]["status"] == "up"


def test_health_is_public_and_documented(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/api/v1/health/" in schema.json()["paths"]


def test_metrics_count_requests(api, docker_daemon):
    api.get(URL)
    text = api.get("/metrics").content.decode()
    assert 'hivemind_http_requests_total{method="GET",route="/api/v1/health/",status="200"}' in text
    assert "hivemind_http_request_duration_seconds_bucket" in text
    assert "process_cpu_seconds_total" in text


def test_openapi_schema_generates_without_warnings(tmp_path):
    """Every field has a type and every enum a name: drf-spectacular's strict mode passes."""
    from django.core.management import call_command

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/v1/workflows/{id}/cancel/" in out.read_text()


def test_processes_of_the_supervisor_are_reported_and_a_crash_loop_is_down(
    api, docker_daemon, tmp_path, settings, monkeypatch
):
    """A real supervisor (as `make run` runs it) writes its state file under the var dir; the web
    process reports its processes, puts a crash-looping one in `down`, and counts restarts."""
    from tests.conftest import wait_for
    from tests.core.supervised import SLEEPER, Supervised, python

    settings.VAR_DIR = tmp_path
    assert "processes" not in api.get(URL).json()  # no supervisor runs for this var dir
    supervisor = Supervised(
        tmp_path,
        [("steady", python(SLEEPER)), ("broken", python("raise SystemExit(2)"))],
        restart_delay=0.05,
        crash_loop_exits=3,
    )
    try:
        steady = supervisor.running_pid("steady")
        response = wait_for(lambda: (r := api.get(URL)).status_code == 503 and r, 30, "broken to be given up on")
        body = response.json()
        assert body["down"] == ["process:broken"]
        assert body["processes"]["broken"]["state"] == "crash-looping"
        assert body["processes"]["broken"]["restarts"] == 2
        assert body["processes"]["broken"]["last_exit_code"] == 2
        assert body["processes"]["steady"]["state"] == "running"
        assert body["processes"]["steady"]["pid"] == steady

        multiproc = tmp_path / "metrics"
        multiproc.mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))  # as under `manage.py up`
        text = api.get("/metrics").content.decode()
        assert 'hivemind_process_restarts_total{process="broken"} 2.0' in text
        assert 'hivemind_process_restarts_total{process="steady"} 0.0' in text
        assert 'hivemind_process_up{process="broken"} 0.0' in text
        assert 'hivemind_process_up{process="steady"} 1.0' in text
    finally:
        supervisor.stop()
    # Stopped: the state file is gone and health no longer speaks of processes.
    body = api.get(URL).json()
    assert "processes" not in body
    assert body["down"] == []
