"""Tracing end to end: the real web process, controller and agent export over OTLP/HTTP to a
receiver in the test, and one deploy is one trace from the API request to the agent's step."""

from __future__ import annotations

import os

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from hivemind.core.tracing import parse_traceparent, process_role, traceparent_of
from hivemind.workflows.models import Workflow, WorkflowState
from tests.applications.conftest import finished, spec
from tests.conftest import wait_for
from tests.observability.otlp import OTLPReceiver

pytestmark = pytest.mark.django_db(transaction=True)

SERVER, PRODUCER, CONSUMER = 2, 4, 5  # OTLP span kinds


@pytest.fixture
def receiver():
    with OTLPReceiver() as running:
        yield running


@pytest.fixture
def traced(subprocess_env, receiver):
    """Every platform process the test starts after this exports its spans to `receiver`."""
    subprocess_env.update(
        HIVEMIND_OTEL_ENABLED="true",
        HIVEMIND_OTEL_ENDPOINT=receiver.endpoint,
        HIVEMIND_OTEL_SERVICE_NAME="hivemind-test",
        HIVEMIND_OTEL_HEADERS="x-collector-token=s3cret%2C1",
        OTEL_BSP_SCHEDULE_DELAY="200",  # the SDK's batch delay (ms): spans arrive within the test's patience
    )
    return receiver


@pytest.fixture
def platform(traced, web_server, platform_processes, node):
    """The traced web process, a controller (control queue) and this node's agent (node.<name>)."""
    controller = platform_processes("worker", queues=[settings.CONTROL_QUEUE])
    agent = platform_processes("worker", queues=[settings.NODE_QUEUE])
    return web_server, controller, agent


def test_one_trace_from_the_api_request_through_every_step_on_the_controller_and_the_agent(
    world, traced, platform, platform_processes
):
    from tenants import services as tenant_services

    web = platform[0]
    _, token = tenant_services.api_token_create(user=world.users["operator"], name="trace")
    answer = requests.post(
        f"{web}/api/v1/apps/",
        json={"tenant": world.a.slug, "name": "traced", "spec": spec(), "replicas": 2},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    workflow = Workflow.objects.get(subject=f"app:{answer.json()['id']}")
    assert finished(workflow, 120).state == WorkflowState.SUCCEEDED, workflow.error
    steps = list(workflow.steps.order_by("index"))
    assert [s.name for s in steps] == ["apps.plan", "apps.start", "apps.finish"]
    assert [s.queue for s in steps] == [settings.CONTROL_QUEUE, settings.NODE_QUEUE, settings.CONTROL_QUEUE]

    def step_spans():
        # Every span asserted below, not only the steps': a process's Celery span of run_step
        # ends after the step's own and may reach the receiver in a later export batch.
        spans = traced.trace(workflow.trace_id)
        found = [s for s in spans if s.name.startswith("workflow step ")]
        consumers = {s.process for s in spans if s.kind == CONSUMER and "workflows.run_step" in s.name}
        return found if len(found) >= len(steps) and consumers >= {"controller", "agent"} else None

    step_spans = wait_for(step_spans, 30, "the spans of every step and of each process's run_step at the receiver")
    spans = traced.trace(workflow.trace_id)

    # The API request's span is the root; the workflow's span is its child and the row keeps it.
    (request,) = [s for s in spans if s.kind == SERVER and s.process == "web"]
    assert request.parent_span_id == ""
    assert (request.attributes["http.method"], request.attributes["http.target"]) == ("POST", "/api/v1/apps/")
    tenant = (request.attributes["hivemind.tenant"], request.attributes["hivemind.tenant_id"])
    assert tenant == (world.a.slug, world.a.pk)  # known once the request made the tenant's workflow
    (created,) = [s for s in spans if s.name == "workflow app.rollout"]
    assert created.parent_span_id == request.span_id and created.process == "web"
    assert workflow.traceparent == f"00-{workflow.trace_id}-{created.span_id}-01"
    assert created.attributes["hivemind.workflow_id"] == workflow.pk
    assert created.attributes["hivemind.tenant_id"] == world.a.pk
    assert created.attributes["hivemind.tenant"] == world.a.slug

    # Every step: a child of the workflow's span, on the process of its queue, with the ids,
    # and its row names the trace and the span of its attempt.
    by_name = {s.attributes["hivemind.step"]: s for s in step_spans}
    where = {"apps.plan": "controller", "apps.start": "agent", "apps.finish": "controller"}
    for step in steps:
        span = by_name[step.name]
        assert span.parent_span_id == created.span_id, step.name
        assert span.process == where[step.name], (step.name, span.resource)
        assert span.attributes["hivemind.workflow_id"] == workflow.pk
        assert span.attributes["hivemind.workflow_kind"] == "app.rollout"
        assert span.attributes["hivemind.tenant_id"] == world.a.pk
        assert span.attributes["hivemind.tenant"] == world.a.slug
        assert (step.trace_id, step.span_id) == (workflow.trace_id, span.span_id)
        assert span.resource["service.name"] == "hivemind-test"
        assert span.resource["hivemind.node"] == settings.NODE_NAME

    # The messages carried the trace in their headers: each process's Celery span of run_step
    # is in it, and so are the agent's Docker calls and the controller's queries.
    consumers = {s.process for s in spans if s.kind == CONSUMER and "workflows.run_step" in s.name}
    assert consumers == {"controller", "agent"}
    docker_calls = [s for s in spans if str(s.attributes.get("http.url", "")).startswith("http+docker://")]
    assert {s.process for s in docker_calls} == {"agent"}
    assert any(s.process == "controller" and s.attributes.get("db.system") == "postgresql" for s in spans)
    assert any(s.process == "web" and s.attributes.get("db.system") == "postgresql" for s in spans)
    # HIVEMIND_OTEL_HEADERS went with every export.
    assert {h.get("x-collector-token") for h in traced.headers} == {"s3cret,1"}

    # The spans came from the pool children: a worker's main process, which forks them, runs
    # no tracing thread (one holding a lock at a fork left a child waiting on it for ever).
    untraced = platform_processes("worker", queues=["spare"], extra_env={"HIVEMIND_OTEL_ENABLED": "false"})
    threads = [len(os.listdir(f"/proc/{p.process.pid}/task")) for p in (platform[1], untraced)]  # the controller
    assert threads[0] == threads[1], threads

    # The ids are shown where people look: the API (and so `hivemind workflow show`), the
    # workflow list filtered by a trace id from a log line, the dashboard's workflow page.
    viewer = world.client("viewer")
    shown = viewer.get(f"/api/v1/workflows/{workflow.pk}/").json()
    assert (shown["trace_id"], shown["traceparent"]) == (workflow.trace_id, workflow.traceparent)
    assert [(s["trace_id"], s["span_id"]) for s in shown["steps"]] == [(s.trace_id, s.span_id) for s in steps]
    listed = viewer.get("/api/v1/workflows/", {"trace_id": workflow.trace_id}).json()["results"]
    assert [(w["id"], w["trace_id"]) for w in listed] == [(workflow.pk, workflow.trace_id)]
    assert viewer.get("/api/v1/workflows/", {"trace_id": "0" * 33}).status_code == 400
    client = Client()
    client.force_login(world.users["viewer"])
    page = client.get(f"/workflows/{workflow.pk}/").content.decode()
    assert '<code id="trace-id"' in page and workflow.trace_id in page
    assert all(f"<code>{s.span_id}</code>" in page for s in steps)
    # The admin: the workflow's trace id and traceparent, each step's trace and span; found by trace id.
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("trace-admin", password="pw-for-tests-only"))
    change = admin.get(f"/admin/workflows/workflow/{workflow.pk}/change/").content.decode()
    assert workflow.traceparent in change and all(s.span_id in change for s in steps)
    found = admin.get("/admin/workflows/workflow/", {"q": workflow.trace_id}).content.decode()
    assert f"/admin/workflows/workflow/{workflow.pk}/change/" in found


def test_a_step_the_reconciler_sends_again_stays_in_the_workflows_trace(world, traced, web_server, platform_processes):
    """The message of a step is lost (the broker emptied before any worker took it); beat's
    reconciler sends it again from its own task, and the step still joins the request's trace."""
    import redis
    from django.conf import settings as django_settings

    from tenants import services as tenant_services

    _, token = tenant_services.api_token_create(user=world.users["staff"], name="trace")
    answer = requests.post(
        f"{web_server}/api/v1/workflows/",
        json={"kind": "noop", "tenant": world.a.slug, "params": {"steps": 2}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    workflow = Workflow.objects.get(pk=answer.json()["id"])
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).flushdb()  # the step's message is gone
    platform_processes("worker", queues=[settings.CONTROL_QUEUE])
    platform_processes("beat")
    assert finished(workflow, 60).state == WorkflowState.SUCCEEDED, workflow.error
    assert workflow.runs == 1

    def both_steps():
        found = [s for s in traced.trace(workflow.trace_id) if s.name == "workflow step noop.step"]
        return found if len(found) == 2 else None

    steps = wait_for(both_steps, 30, "both steps' spans")
    spans = traced.trace(workflow.trace_id)
    (created,) = [s for s in spans if s.name == "workflow noop"]
    (request,) = [s for s in spans if s.kind == SERVER]
    assert created.parent_span_id == request.span_id
    assert all(step.parent_span_id == created.span_id for step in steps)
    # The message the reconciler sent again carried the workflow's context, not the reconcile task's.
    sent = sorted((s for s in spans if s.kind == PRODUCER and "run_step" in s.name), key=lambda s: s.start)
    assert [s.process for s in sent][:2] == ["web", "controller"], sent  # the web's message was lost
    assert sent[0].parent_span_id == sent[1].parent_span_id == created.span_id
    reconciles = [s for s in traced.received() if s.name == "run/workflows.reconcile"]
    assert reconciles and all(s.trace_id != workflow.trace_id for s in reconciles)


def test_traceparent_round_trip():
    from opentelemetry.trace import SpanContext, TraceFlags

    context = SpanContext(trace_id=0xABC, span_id=0x12, is_remote=False, trace_flags=TraceFlags(0x03))
    value = traceparent_of(context)
    assert value == "00-00000000000000000000000000000abc-0000000000000012-01"  # only the sampled flag
    parsed = parse_traceparent(value)
    assert (parsed.trace_id, parsed.span_id, parsed.trace_flags.sampled, parsed.is_remote) == (0xABC, 0x12, True, True)
    for damaged in ("", "01-" + value[3:], value[:-1], value.replace("abc", "xyz"), f"00-{'0' * 32}-{'1' * 16}-01"):
        assert parse_traceparent(damaged) is None, damaged


def test_a_workflows_steps_follow_the_sampling_choice_stored_with_it():
    """HIVEMIND_OTEL_SAMPLE_RATIO decides where a trace starts; a step's span, made from the
    stored traceparent in another process, keeps or drops with it (whatever that process's ratio)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from hivemind.core.tracing import workflow_context

    kept_everywhere = TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0))).get_tracer("test")
    dropped_everywhere = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0))).get_tracer("test")
    sampled, not_sampled = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01", "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"
    for tracer in (kept_everywhere, dropped_everywhere):
        assert tracer.start_span("step", context=workflow_context(sampled)).is_recording()
        assert not tracer.start_span("step", context=workflow_context(not_sampled)).is_recording()
    assert workflow_context("") is None  # no stored context: the step's span starts its own trace


def test_every_platform_process_knows_its_name(subprocess_env):
    from hivemind.config import load_config
    from hivemind.core.processes import platform_processes

    specs = platform_processes(config=load_config(subprocess_env), bindir="/venv/bin")
    assert {spec.name: process_role(spec.argv) for spec in specs} == {
        "web": "web",
        "controller": "controller",
        "agent": "agent",
        "beat": "beat",
    }
    assert process_role(["celery", "-A", "hivemind", "worker", "-Q", "control,node.x"]) == "worker"
    assert process_role(["manage.py", "migrate"]) == "manage"


def test_off_by_default_nothing_is_loaded_or_wrapped(subprocess_env):
    """Tracing off: no tracing SDK, no instrumentation or exporter imported, the database driver untouched, and a
    workflow still gets a trace id of its own (its log lines share it)."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    subprocess_env.pop("HIVEMIND_OTEL_ENABLED", None)
    script = (
        "import django, json, os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'hivemind.settings'; django.setup()\n"
        "import psycopg; from opentelemetry import trace; from hivemind.core.tracing import tracer\n"
        "span = tracer().start_span('x')\n"
        "kinds = ('opentelemetry.sdk.trace', 'opentelemetry.instrumentation', 'opentelemetry.exporter')\n"
        "print(json.dumps({'modules': sorted(m for m in sys.modules if m.startswith(kinds)), "
        "'provider': type(trace.get_tracer_provider()).__name__, "
        "'connect': psycopg.connect.__module__, 'recording': span.is_recording()}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "modules": [],
        "provider": "ProxyTracerProvider",
        "connect": "psycopg.connection",
        "recording": False,
    }
