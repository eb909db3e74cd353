"""The workflows API: tenant scoping (shared suite), validation, and the engine's bookkeeping
checked in-process (no worker needed: these tests call the engine's functions directly)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from hivemind.workflows import engine
from hivemind.workflows.models import Step, StepState, Workflow, WorkflowState
from tenants.models import Role
from tests.api_suite import TenantOwnedAPITests

pytestmark = pytest.mark.django_db


def make_workflow(tenant, **params) -> Workflow:
    # In a `db` test the transaction never commits, so nothing is sent to the broker.
    return engine.workflow_create(kind="noop", tenant=tenant, params=params or {"steps": 2})


class TestWorkflowAPI(TenantOwnedAPITests):
    basename = "workflow"
    supports: set[str] = set()  # read-only, plus the actions below
    custom_actions = [("cancel", "post"), ("retry", "post")]

    def make(self, world, tenant):
        return make_workflow(tenant)

    def test_create_in_another_tenant_is_refused(self, world):
        """Only platform staff start workflows here, in any tenant; members get a 403."""
        payload = {"kind": "noop", "tenant": world.a.slug, "params": {"steps": 1}}
        response = world.client(Role.OWNER.value).post(self.list_url(), payload, format="json")
        assert response.status_code == 403
        payload["tenant"] = world.b.slug
        response = world.client(Role.OWNER.value).post(self.list_url(), payload, format="json")
        assert response.status_code == 400  # tenant B does not exist for them
        assert "tenant" in response.json()

    def test_update_and_delete_are_not_offered(self, world):
        obj = self.make(world, world.a)
        client = world.client("staff")
        assert client.patch(self.detail_url(obj), {"state": "succeeded"}, format="json").status_code == 405
        assert client.delete(self.detail_url(obj)).status_code == 405

    @pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("operator", 202), ("owner", 202)])
    def test_cancel_needs_operator(self, world, role, status):
        obj = self.make(world, world.a)
        response = world.client(role).post(reverse_action("cancel", obj))
        assert response.status_code == status, response.content


def reverse_action(name: str, workflow: Workflow) -> str:
    return f"/api/v1/workflows/{workflow.pk}/{name}/"


def test_staff_start_a_noop_workflow_and_read_it_back(world):
    client = world.client("staff")
    response = client.post(
        "/api/v1/workflows/",
        {"kind": "noop", "tenant": world.a.slug, "params": {"steps": 3, "locks": [{"key": "volume:1"}]}},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == WorkflowState.RUNNING  # no conflicting lock: started at once
    assert body["tenant"] == world.a.slug and body["created_by"] == "staff"
    assert body["locks"] == [{"key": "volume:1", "mode": "exclusive"}]
    assert [(s["index"], s["state"], s["queue"]) for s in body["steps"]] == [
        (0, "pending", "control"),
        (1, "pending", "control"),
        (2, "pending", "control"),
    ]
    second = client.post(
        "/api/v1/workflows/", {"kind": "noop", "params": {"locks": [{"key": "volume:1"}]}},
        format="json", HTTP_X_HIVEMIND_TENANT=world.a.slug,
    )  # fmt: skip
    assert second.status_code == 201
    assert second.json()["state"] == WorkflowState.PENDING
    assert second.json()["waiting_on"] == f"exclusive lock volume:1 of workflow {body['id']}"
    listed = client.get("/api/v1/workflows/", {"state": "pending", "tenant": world.a.slug}).json()
    assert [w["id"] for w in listed["results"]] == [second.json()["id"]]
    assert listed["results"][0]["steps_done"] == 0 and listed["results"][0]["current_step"] == "noop.step"
    assert client.get("/api/v1/workflows/", {"active": "false"}).json()["count"] == 0


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"kind": "deploy"}, "kind", "unknown workflow kind 'deploy'"),
        ({"kind": "noop", "params": {"steps": 0}}, "steps", "expected 1 to 100"),
        ({"kind": "noop", "params": {"steps": 2, "fail_at": 3}}, "fail_at", "expected 1 to 2"),
        ({"kind": "noop", "params": {"steps": "many"}}, "steps", "expected a whole number"),
        ({"kind": "noop", "params": {"sleep": -1}}, "sleep", "expected 0 to 600"),
        ({"kind": "noop", "params": {"fail": "sometimes"}}, "fail", "expected permanent or transient"),
        ({"kind": "noop", "params": {"node": "Bad_Node"}}, "node", "expected a node name"),
        ({"kind": "noop", "params": {"colour": "red"}}, "params", "unknown parameter(s): colour"),
        ({"kind": "noop", "params": {"locks": [{"key": "v:1", "mode": "greedy"}]}}, "locks", "exclusive or shared"),
        ({"kind": "noop", "params": {"locks": "volume:1"}}, "locks", "expected a list"),
        ({"kind": "noop", "params": [1, 2]}, "params", "expected an object"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(world, payload, field, message):
    response = world.client("staff").post("/api/v1/workflows/", {"tenant": world.a.slug, **payload}, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors, errors
    assert message in str(errors[field])
    assert not Workflow.objects.exists()


def test_a_suspended_tenant_starts_no_workflow(world):
    from tenants import services

    services.tenant_suspend(tenant=world.a, actor=world.users["staff"])
    response = world.client("staff").post("/api/v1/workflows/", {"kind": "noop", "tenant": world.a.slug}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "tenant_not_active"


# --- the engine's bookkeeping, in-process -----------------------------------------------------


def _sample(name: str, labels: dict) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_step_records_output_metrics_and_a_span_in_the_workflows_trace(world):
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    before = _sample("hivemind_workflow_step_duration_seconds_count", {"kind": "noop", "step": "noop.step"})
    succeeded = _sample("hivemind_workflows_total", {"kind": "noop", "state": "succeeded"})

    workflow = make_workflow(world.a, steps=1)
    step = workflow.steps.get()
    engine.execute_step(step.pk, hostname="test@host")

    workflow.refresh_from_db()
    step.refresh_from_db()
    assert workflow.state == WorkflowState.SUCCEEDED and workflow.result == {"step": 1, "attempt": 1}
    assert step.state == StepState.SUCCEEDED and step.worker.startswith("test@host pid ")
    assert step.history[0]["error"] == "" and step.history[0]["attempt"] == 1
    after = _sample("hivemind_workflow_step_duration_seconds_count", {"kind": "noop", "step": "noop.step"})
    assert after == before + 1
    assert _sample("hivemind_workflows_total", {"kind": "noop", "state": "succeeded"}) == succeeded + 1
    spans = [s for s in exporter.get_finished_spans() if s.name == "workflow step noop.step"]
    assert len(spans) == 1
    assert spans[0].attributes["hivemind.workflow_id"] == workflow.pk
    assert f"{spans[0].context.trace_id:032x}" == workflow.trace_id


def test_a_duplicate_message_does_nothing(world):
    workflow = make_workflow(world.a, steps=2)
    first = workflow.steps.get(index=0)
    engine.execute_step(first.pk, hostname="a@host")
    with pytest.raises(engine.Superseded, match="is succeeded"):
        engine.execute_step(first.pk, hostname="b@host")
    first.refresh_from_db()
    assert first.attempts == 1 and first.worker.startswith("a@host")


def test_a_message_for_a_step_running_on_a_live_worker_is_ignored(world):
    workflow = make_workflow(world.a, steps=1)
    step = workflow.steps.get()
    Step.objects.filter(pk=step.pk).update(
        state=StepState.RUNNING, attempts=1, worker="elsewhere@host pid 1", heartbeat_at=timezone.now()
    )
    with pytest.raises(engine.Superseded, match="is running on elsewhere@host"):
        engine.execute_step(step.pk, hostname="me@host")


def test_the_reconciler_times_out_an_overdue_step(world):
    workflow = make_workflow(world.a, steps=2)
    step = workflow.steps.get(index=0)
    long_ago = timezone.now() - timedelta(hours=2)
    Step.objects.filter(pk=step.pk).update(
        state=StepState.RUNNING, attempts=1, started_at=long_ago, heartbeat_at=timezone.now(),
        deadline=long_ago + timedelta(minutes=30), worker="w@host pid 1",
    )  # fmt: skip
    report = engine.reconcile(wakeups=(set(), set()))
    assert report["timed_out"] == 1
    step.refresh_from_db()
    workflow.refresh_from_db()
    assert step.state == StepState.FAILED and step.error.startswith("timed out")
    assert workflow.state == WorkflowState.COMPENSATING
    assert workflow.error.startswith("step 1 (noop.step) failed: timed out")


def test_the_reconciler_fails_a_step_only_when_its_nodes_agent_fell_silent(world):
    from hivemind.nodes.models import Node

    now, long_ago = timezone.now(), timezone.now() - timedelta(minutes=5)
    Node.objects.create(name="slow", status=Node.Status.NOT_READY, last_heartbeat=now)  # Docker slow, agent alive
    Node.objects.create(name="gone", status=Node.Status.NOT_READY, last_heartbeat=long_ago)
    waiting = make_workflow(world.a, steps=1, node="slow")
    failing = make_workflow(world.a, steps=1, node="gone")
    Workflow.objects.filter(pk__in=[waiting.pk, failing.pk]).update(dispatched_at=long_ago)
    queued = set(Step.objects.filter(workflow=waiting).values_list("pk", flat=True))  # still in its queue

    report = engine.reconcile(wakeups=(queued, set()))
    assert report["unreachable"] == 1
    step = failing.steps.get(phase="forward")  # its compensation step follows
    assert step.state == StepState.FAILED
    assert step.error.startswith("cannot run: node gone is not ready and its agent has not beaten for")
    assert waiting.steps.get(phase="forward").state == StepState.PENDING
    waiting.refresh_from_db()
    assert waiting.state == WorkflowState.RUNNING


def test_since_filter_takes_a_time_or_how_long_ago(world):
    client = world.client("owner")
    for since in ("5m", "2026-01-31T12:00:00Z", "2026-01-31 14:00+02:00"):
        response = client.get("/api/v1/workflows/", {"since": since})
        assert response.status_code == 200, (since, response.content)
    for since in ("yesterday", "NaN", "-5m", "0"):
        response = client.get("/api/v1/workflows/", {"since": since})
        assert response.status_code == 400 and list(response.json()) == ["since"], (since, response.content)
