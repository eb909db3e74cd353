"""Structured logs from the real platform processes: with HIVEMIND_LOG_FORMAT=json every line
of web (gunicorn as `manage.py up` starts it), the controller, the agent and beat is one JSON object,
and the lines written for a request or a workflow step name its tenant, workflow, step, trace
and span. The text format ends its lines with the same ids."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings
from django.db import connection

from hivemind.config import load_config
from hivemind.core import logs
from hivemind.core.processes import process_spec
from hivemind.workflows import engine
from hivemind.workflows.models import Workflow, WorkflowState
from tests.applications.conftest import finished, spec
from tests.conftest import RUNNING, PlatformProcess, free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def json_lines(process: PlatformProcess) -> list[dict]:
    """Every line the process wrote, each parsed as JSON (a line that is not JSON fails the test)."""
    parsed = []
    for line in process.output().splitlines():
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{process.name} wrote a line that is not JSON: {line!r}") from None
    return parsed


@pytest.fixture
def platform_env(subprocess_env) -> dict:
    """What `manage.py up` would give its children here: the test database, the suite's Redis
    database (emptied), JSON logs and tracing on (to an endpoint nobody needs to answer)."""
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    db = connection.settings_dict
    return {
        **subprocess_env,
        "HIVEMIND_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "HIVEMIND_VAR_DIR": str(settings.VAR_DIR),
        "HIVEMIND_SECRET_KEY": settings.SECRET_KEY,
        "HIVEMIND_STEP_HEARTBEAT": "1",
        "HIVEMIND_RECONCILE_INTERVAL": "1",
        "HIVEMIND_WORKER_CONCURRENCY": "2",
        "HIVEMIND_LOG_FORMAT": "json",
        "HIVEMIND_OTEL_ENABLED": "true",
        "HIVEMIND_OTEL_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
    }


def start(name: str, env: dict, tmp_path: Path, **overrides) -> PlatformProcess:
    """One platform process exactly as hivemind.core.processes says to start it."""
    config = load_config(env)
    argv = process_spec(name, config=config, bindir=str(Path(sys.executable).parent)).argv
    process = PlatformProcess(name, argv, env, tmp_path / f"{name}.log")
    RUNNING.append(process)
    return process


def test_every_line_of_web_controller_agent_and_beat_is_json_with_the_ids(world, node, platform_env, tmp_path):
    from tenants import services as tenant_services

    port = free_port()
    platform_env["HIVEMIND_WEB_BIND"] = f"127.0.0.1:{port}"
    web = start("web", platform_env, tmp_path)
    controller = start("controller", platform_env, tmp_path)
    agent = start("agent", platform_env, tmp_path)
    beat = start("beat", platform_env, tmp_path)
    try:
        for worker in (controller, agent):
            wait_for(lambda w=worker: "ready." in w.output() or w.process.poll() is not None, 60, f"{worker.name}")
            assert worker.process.poll() is None, worker.output()[-3000:]
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base) or web.process.poll() is not None, 60, "the web process to answer")

        _, token = tenant_services.api_token_create(user=world.users["operator"], name="logs")
        answer = requests.post(
            f"{base}/api/v1/apps/",
            json={"name": "logged", "spec": spec(), "replicas": 1},
            headers={"Authorization": f"Bearer {token}", "X-Hivemind-Tenant": world.a.slug, "X-Request-ID": "req-42"},
            timeout=60,
        )
        assert answer.status_code == 202, answer.text
        assert answer.headers["X-Request-ID"] == "req-42"
        workflow = Workflow.objects.get(subject=f"app:{answer.json()['id']}")
        assert finished(workflow, 120).state == WorkflowState.SUCCEEDED, workflow.error
        steps = {s.name: s for s in workflow.steps.all()}
        bad = requests.post(
            f"{base}/api/v1/apps/",
            json={"name": "", "spec": spec()},
            headers={"Authorization": f"Bearer {token}", "X-Hivemind-Tenant": world.a.slug, "X-Request-ID": "req-43"},
            timeout=60,
        )
        assert bad.status_code == 400, bad.text
        wait_for(lambda: any("apps.finish" in str(line.get("step")) for line in json_lines(controller)), 10, "logs")
    finally:
        for process in (web, controller, agent, beat):
            process.stop()

    web_lines, controller_lines, agent_lines = json_lines(web), json_lines(controller), json_lines(agent)
    beat_lines = json_lines(beat)
    assert any("Sending due task workflows-reconcile" in line["message"] for line in beat_lines)
    every = ((web_lines, "web"), (controller_lines, "controller"), (agent_lines, "agent"), (beat_lines, "beat"))
    for lines, name in every:
        assert lines, name
        for line in lines:
            assert {"time", "level", "logger", "message", "process", "pid"} <= set(line), line
            assert line["process"] == name, line
            assert line["time"].endswith("Z") and line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

    # The request's own line: the workflow it created, with the request, the tenant and the trace.
    (created,) = [line for line in web_lines if line["message"].startswith(f"workflow {workflow.pk} ")]
    assert created["request_id"] == "req-42"
    assert (created["tenant"], created["tenant_id"]) == (world.a.slug, world.a.pk)
    assert (created["workflow_id"], created["workflow_kind"]) == (workflow.pk, "app.rollout")
    assert created["trace_id"] == workflow.trace_id
    assert created["span_id"] == workflow.traceparent.split("-")[2]  # the workflow's own span
    # gunicorn's own lines (start-up, access log) are JSON too; the access line names the request.
    assert any(line["logger"] == "gunicorn.error" and "Listening at" in line["message"] for line in web_lines)
    (access,) = [
        line for line in web_lines if line["logger"] == "gunicorn.access" and line.get("request_id") == "req-42"
    ]
    assert "POST /api/v1/apps/" in access["message"] and access["tenant"] == world.a.slug
    assert access["trace_id"] == workflow.trace_id  # the request's trace, which the workflow continues
    (refused,) = [line for line in web_lines if line["logger"] == "django.request"]  # Django logs every 4xx
    assert (refused["level"], refused["request_id"]) == ("WARNING", "req-43")  # refused before its tenant was read
    assert len(refused["trace_id"]) == 32 and refused["trace_id"] != workflow.trace_id  # its own request's trace

    # Each step's lines, on the process that ran it: tenant, workflow, step, the trace and the step's span.
    for lines, name in (
        (controller_lines, "apps.plan"),
        (agent_lines, "apps.start"),
        (controller_lines, "apps.finish"),
    ):
        done = [line for line in lines if line.get("step") == name and "succeeded on attempt" in line["message"]]
        assert len(done) == 1, (name, done)
        line = done[0]
        assert (line["tenant"], line["tenant_id"], line["workflow_id"]) == (world.a.slug, world.a.pk, workflow.pk)
        assert line["workflow_kind"] == "app.rollout"
        assert (line["trace_id"], line["span_id"]) == (workflow.trace_id, steps[name].span_id)
    assert any(line["message"] == "worker: Warm shutdown (MainProcess)" for line in agent_lines)  # Celery's own
    # Lines written outside any request or step carry no ids.
    ready = next(line for line in controller_lines if "ready." in line["message"])
    assert not {"tenant", "workflow_id", "step", "trace_id", "request_id"} & set(ready)


def _answers(base: str) -> bool:
    try:
        return requests.get(f"{base}/admin/login/", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_text_lines_end_with_the_ids_and_the_trace_id_even_with_tracing_off(platform_processes, world):
    worker = platform_processes("worker", queues=[settings.CONTROL_QUEUE])
    workflow = engine.workflow_create(kind="noop", tenant=world.a, params={"steps": 2})
    wait_for(lambda: Workflow.objects.get(pk=workflow.pk).is_terminal, 60, "the noop workflow")
    assert len(workflow.trace_id) == 32  # the worker traces nothing: its lines take the workflow's own id
    wanted = f" tenant={world.a.slug} workflow_id={workflow.pk} step=noop.step trace_id={workflow.trace_id}"
    wait_for(lambda: worker.output().count(wanted) >= 3, 10, f"three lines ending with {wanted!r}")
    lines = [line.removesuffix(wanted) for line in worker.output().splitlines() if line.endswith(wanted)]
    assert [line.split(" INFO hivemind.workflows.engine ", 1)[1] for line in lines] == [
        "forward step 1/2 succeeded on attempt 1 in " + lines[0].rsplit(" in ", 1)[1],
        "forward step 2/2 succeeded on attempt 1 in " + lines[1].rsplit(" in ", 1)[1],
        f"workflow {workflow.pk} (noop) succeeded",
    ]


def test_the_json_formatter_and_the_context():
    formatter, context = logs.JsonFormatter(), logs.ContextFilter()

    def line(message: str, *args, **extra) -> dict:
        record = logging.LogRecord("hivemind.test", logging.WARNING, __file__, 1, message, args, None)
        record.__dict__.update(extra)
        context.filter(record)
        return json.loads(formatter.format(record))

    plain = line("hello %s", "world")
    assert set(plain) == {"time", "level", "logger", "message", "process", "pid"}
    assert (plain["level"], plain["logger"], plain["message"]) == ("WARNING", "hivemind.test", "hello world")
    with logs.log_context(tenant="a", tenant_id=3, workflow_id=12, step="noop.step", trace_id="ab" * 16):
        logs.bind(request_id="r1", ignored=None)
        inside = line('ünïcode "quoted"', node="edge-1")
        with logs.log_context(step="other"):
            assert line("nested")["step"] == "other"
        assert line("after")["step"] == "noop.step"
    assert inside["message"] == 'ünïcode "quoted"'
    assert {k: inside[k] for k in ("tenant", "tenant_id", "workflow_id", "step", "trace_id", "request_id")} == {
        "tenant": "a",
        "tenant_id": 3,
        "workflow_id": 12,
        "step": "noop.step",
        "trace_id": "ab" * 16,
        "request_id": "r1",
    }
    assert inside["node"] == "edge-1" and "ignored" not in inside  # extra= fields are kept
    assert "step" not in line("outside again")
    logs.bind(tenant="x")  # outside any context: nothing to bind to, nothing leaks
    assert "tenant" not in line("still outside")
