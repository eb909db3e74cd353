"""The workflow admin: list, the step timeline, and the cancel and retry actions."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from hivemind.workflows import engine
from hivemind.workflows.models import WorkflowState

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(world) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("wf-admin", password="pw-for-tests-only"))
    return client


def test_change_page_draws_the_step_timeline(world, admin_client):
    workflow = engine.workflow_create(kind="noop", tenant=world.a, params={"steps": 3})
    for step in workflow.steps.order_by("index")[:2]:
        engine.execute_step(step.pk, hostname="admin-test@host")
    listing = admin_client.get("/admin/workflows/workflow/?state__exact=running")
    assert listing.status_code == 200
    assert b"2/3" in listing.content  # progress column
    page = admin_client.get(f"/admin/workflows/workflow/{workflow.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('title="succeeded, attempt 1') == 2  # one bar per step that ran
    assert "1. noop.step" in html and "2. noop.step" in html


def test_cancel_action_cancels_and_reports_conflicts(world, admin_client):
    waiting = engine.workflow_create(kind="noop", tenant=world.a, params={"locks": [{"key": "volume:9"}]})
    blocked = engine.workflow_create(kind="noop", tenant=world.a, params={"locks": [{"key": "volume:9"}]})
    assert blocked.state == WorkflowState.PENDING
    response = admin_client.post(
        "/admin/workflows/workflow/",
        {"action": "cancel_selected", "_selected_action": [blocked.pk]},
        follow=True,
    )
    assert [str(m) for m in response.context["messages"]] == ["cancelled 1 workflow(s)"]
    blocked.refresh_from_db()
    assert blocked.state == WorkflowState.CANCELLED
    response = admin_client.post(
        "/admin/workflows/workflow/",
        {"action": "retry_selected", "_selected_action": [waiting.pk]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        f"workflow {waiting.pk}: only a failed workflow can be retried; workflow {waiting.pk} is running"
    ]
