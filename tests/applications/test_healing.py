"""Self-healing on this machine's node: its real agent reports what Docker runs, beat runs the
app reconciler, and heal rollouts replace what broke. Also a rolling restart under a probe."""

from __future__ import annotations

import time

import docker
import pytest

from hivemind.applications import services
from hivemind.applications.models import App, Container
from hivemind.workflows.models import Workflow, WorkflowState
from tests.applications.conftest import HealthyProbe, docker_replicas, finished, healthy_replicas, spec
from tests.conftest import wait_for

HEARTBEAT, RECONCILE = 2, 1  # seconds: the agent reports every 2 s, the reconciler runs every 1 s
FAST = {"HIVEMIND_NODE_HEARTBEAT": str(HEARTBEAT)}
# Kill to heal rollout: at most one report and one reconcile pass, plus room for a busy machine.
NOTICED_WITHIN = HEARTBEAT + RECONCILE + 8


def heals(app: App):
    return Workflow.objects.filter(subject=f"app:{app.pk}", params__action="heal").order_by("pk")


def running_names(docker_client, app: App) -> set[str]:
    return {c.name for c in docker_replicas(docker_client, app) if c.status == "running"}


@pytest.fixture
def stranger(docker_client, busybox_image):
    """A container Hivemind did not make, named like one of its own: it must never be touched."""
    container = docker_client.containers.run(
        busybox_image, ["sleep", "600"], name="hm-a-healme-0-000000", detach=True, labels={"purpose": "test"}
    )
    yield container
    container.remove(force=True)


def test_killed_and_removed_containers_are_replaced(platform_processes, world, node, docker_client, stranger):
    platform_processes("worker", extra_env=FAST)  # the control queue and this node's: its agent runs here
    platform_processes("beat", extra_env=FAST)
    staff = world.users["staff"]
    app = services.app_deploy(tenant=world.a, name="healme", spec=spec(restart="no"), replicas=2, actor=staff)
    assert finished(app.workflow).state == WorkflowState.SUCCEEDED, app.workflow.error
    before = running_names(docker_client, app)
    assert len(before) == 2

    # A crashed process (restart policy "no", so Docker leaves it exited): replaced by a heal.
    victim = docker_client.containers.get(sorted(before)[0])
    killed_at = time.monotonic()
    victim.kill()
    heal = wait_for(lambda: heals(app).first(), NOTICED_WITHIN, "a heal rollout after the kill")
    print(f"kill noticed after {time.monotonic() - killed_at:.1f} s")
    assert finished(heal).state == WorkflowState.SUCCEEDED, heal.error
    after = running_names(docker_client, app)
    assert len(after) == 2 and victim.name not in after
    with pytest.raises(docker.errors.NotFound):  # the exited container went, not just stopped
        docker_client.containers.get(victim.name)
    assert not Container.objects.filter(name=victim.name).exclude(state=Container.State.REMOVED).exists()
    assert sorted(app.containers.exclude(state="removed").values_list("replica", flat=True)) == [0, 1]

    # A container removed behind Hivemind's back: its row goes missing, and a heal replaces it.
    gone = docker_client.containers.get(sorted(after)[0])
    gone.remove(force=True)
    second = wait_for(lambda: heals(app).exclude(pk=heal.pk).first(), NOTICED_WITHIN, "a heal after the removal")
    assert finished(second).state == WorkflowState.SUCCEEDED, second.error
    assert not Container.objects.filter(name=gone.name).exclude(state=Container.State.REMOVED).exists()
    wait_for(lambda: healthy_replicas(docker_client, app) == 2, 30, "two healthy replicas")
    app.refresh_from_db()
    assert app.status == App.Status.RUNNING and app.replicas == 2
    time.sleep(HEARTBEAT + 2 * RECONCILE)  # a healed app stays healed: no further heal starts
    assert heals(app).count() == 2

    stranger.reload()
    assert stranger.status == "running"  # an unlabelled container is never Hivemind's to touch


def test_rolling_restart_replaces_every_replica_and_keeps_enough_healthy(
    platform_processes, world, node, docker_client
):
    platform_processes("worker", concurrency=4)
    staff = world.users["staff"]
    rolling = spec(update={"max_surge": 1, "max_unavailable": 1})
    app = services.app_deploy(tenant=world.a, name="restartme", spec=rolling, replicas=3, actor=staff)
    assert finished(app.workflow).state == WorkflowState.SUCCEEDED, app.workflow.error
    before = running_names(docker_client, app)
    revision = App.objects.get(pk=app.pk).revision_id

    with HealthyProbe(docker_client, app) as probe:
        workflow = finished(services.app_restart(app=app, actor=staff), 180)
    assert workflow.state == WorkflowState.SUCCEEDED, workflow.error
    assert probe.lowest >= 3 - 1, f"only {probe.lowest} healthy replicas during the restart (max_unavailable 1)"
    after = running_names(docker_client, app)
    assert len(after) == 3 and not (after & before), "every replica is a new container"
    assert App.objects.get(pk=app.pk).revision_id == revision  # a restart makes no new revision
    assert len(docker_replicas(docker_client, app)) == 3  # the old ones are gone, not stopped


def test_an_unhealthy_replica_is_replaced(platform_processes, world, node, docker_client):
    platform_processes("worker", extra_env=FAST)
    platform_processes("beat", extra_env=FAST)
    staff = world.users["staff"]
    # Healthy while /tmp/ok exists; removing it makes the replica fail its checks while it keeps running.
    sick_spec = spec(
        command="sh -c 'touch /tmp/ok && exec httpd -f -p 8080'",
        health={"type": "cmd", "command": ["test", "-f", "/tmp/ok"], "interval": 0.5, "timeout": 1, "retries": 2},
    )
    app = services.app_deploy(tenant=world.a, name="sickly", spec=sick_spec, replicas=2, actor=staff)
    assert finished(app.workflow).state == WorkflowState.SUCCEEDED, app.workflow.error
    patient = docker_client.containers.get(sorted(running_names(docker_client, app))[0])
    assert patient.exec_run(["rm", "/tmp/ok"]).exit_code == 0

    heal = wait_for(lambda: heals(app).first(), 30, "a heal rollout for the unhealthy replica")
    assert finished(heal).state == WorkflowState.SUCCEEDED, heal.error
    wait_for(lambda: healthy_replicas(docker_client, app) == 2, 30, "two healthy replicas")
    assert patient.name not in running_names(docker_client, app)
    assert Container.objects.filter(name=patient.name).exclude(state=Container.State.REMOVED).count() == 0
