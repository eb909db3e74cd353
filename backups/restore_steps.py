"""The `backup.restore` workflow: a Restore (backups/restores.py) carried out.

    restore.plan         (control)    the plan computed again from the backup's document and the
                                      tenant as it is now; stored on Restore.plan (what is done)
    restore.apply        (control)    notifiers, networks, network policies and volumes through their
                                      services (backups/apply.py); then adds the steps below
    restore.volume_data  (node.<n>)   one per node holding restored volumes: once a volume's
                                      create workflow has made it, its backup is restored into
                                      its directory (byte-identical to the backed-up one)
    restore.files        (node.<n>)   a file restore: the paths restored beside the target, moved
                                      into place only when every chunk checked out
    restore.apps         (control)    the apps, deployed after their volumes hold their data, and
                                      the alert rules
    restore.finish       (control)    the outcome on the Restore

Lock: `restore:<tenant pk>` (one restore into a tenant at a time). A restore that fails for good
is compensated: what it created (recorded on Restore.result["created"]) is removed, newest first,
through the delete services; what existed before is never touched. The Restore ends `failed`
with the workflow's error, which names the step, and for a damaged backup the object and file.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from backups.models import Restore
from backups.repository import RepositoryLocked
from hivemind.workflows.registry import (
    DEFAULT_TRANSIENT,
    Lock,
    Plan,
    PlannedStep,
    TransientError,
    WorkflowKind,
    step,
    workflow_kind,
)

TRANSIENT = (*DEFAULT_TRANSIENT, RepositoryLocked)
CONFIG_KINDS = ("tenant", "quota", "member", "service_account", "notifier", "network", "network_policy", "volume",
                "silence")  # fmt: skip
LAST_KINDS = ("app", "alert_rule", "backup_policy")  # after the volumes hold their data


def _restore(ctx) -> Restore:
    return Restore.objects.select_related("tenant", "backup__location__tenant", "backup__tenant",
                                          "workflow__created_by").get(pk=ctx.params["restore"])  # fmt: skip


def _actor(restore: Restore):
    return restore.workflow.created_by if restore.workflow else None


def _update_result(restore_id: int, **fields) -> None:
    with transaction.atomic():
        row = Restore.objects.select_for_update().only("result").get(pk=restore_id)
        Restore.objects.filter(pk=restore_id).update(result={**(row.result or {}), **fields})


@workflow_kind
class BackupRestore(WorkflowKind):
    name = "backup.restore"
    description = "restore a backup (or part of one) into a tenant: its configuration, volumes' data, files"

    def clean(self, params: dict) -> dict:
        params = super().clean(params)
        restore = params.get("restore")
        if isinstance(restore, bool) or not isinstance(restore, int) or not Restore.objects.filter(pk=restore).exists():
            raise ValidationError({"restore": f"no restore {str(restore)[:40]!r}"})
        return {"restore": restore}

    def plan(self, params: dict) -> Plan:
        restore = Restore.objects.get(pk=params["restore"])
        return Plan(steps=[PlannedStep("restore.plan"), PlannedStep("restore.apply")],
                    locks=[Lock(f"restore:{restore.tenant_id}")], subject=f"restore:{restore.pk}")  # fmt: skip

    def on_finished(self, workflow) -> None:
        from hivemind.workflows.models import WorkflowState

        if workflow.state == WorkflowState.SUCCEEDED:
            return
        Restore.objects.filter(pk=workflow.params["restore"]).update(
            status=Restore.Status.FAILED, error=(workflow.error or workflow.state)[:4000], finished_at=timezone.now()
        )


@step("restore.plan", max_attempts=3, timeout=600, backoff=5.0, transient=TRANSIENT)
def plan_again(ctx):
    from backups.restores import compute_plan

    restore = _restore(ctx)
    if restore.backup is None:
        raise ValueError("the backup was removed before the restore began")
    plan = compute_plan(backup=restore.backup, into_tenant=restore.tenant, selection=restore.selection,
                        rename=restore.rename, conflicts=restore.conflicts, at=restore.at,
                        actor=_actor(restore))  # fmt: skip
    changed = plan != restore.plan
    if ctx.attempt == 1 and changed:  # the tenant changed since the request: this is what is done
        _update_result(restore.pk, plan_changed=True)
    Restore.objects.filter(pk=restore.pk).update(plan=plan, status=Restore.Status.RUNNING, error="")
    return {"actions": len(plan), "changed": changed}


@step("restore.apply", max_attempts=3, timeout=600, backoff=5.0)
def apply_configuration(ctx):
    from backups.apply import apply_actions
    from storage.models import Volume

    restore = _restore(ctx)
    config = [a for a in restore.plan if a["kind"] in CONFIG_KINDS]
    done = apply_actions(restore, config, _actor(restore))
    by_node: dict[str, list[dict]] = {}
    for action in restore.plan:
        if action["kind"] == "volume_data":
            volume = Volume.objects.select_related("pool__node").get(tenant=restore.tenant, name=action["name"])
            by_node.setdefault(volume.pool.node.name, []).append(
                {"volume": volume.pk, "name": volume.name, "snapshot": action["object"]["snapshot"]}
            )
    steps = [PlannedStep("restore.volume_data", queue=f"node.{node}", params={"volumes": volumes})
             for node, volumes in sorted(by_node.items())]  # fmt: skip
    files = [a for a in restore.plan if a["kind"] == "file"]
    if files:
        target = Volume.objects.select_related("pool__node").get(
            tenant=restore.tenant, name=restore.selection["files"]["into_volume"]
        )
        steps.append(PlannedStep("restore.files", queue=f"node.{target.pool.node.name}", params={"volume": target.pk}))
    if any(a["kind"] in LAST_KINDS for a in restore.plan):
        steps.append(PlannedStep("restore.apps"))
    steps.append(PlannedStep("restore.finish"))
    ctx.add_steps(steps)
    return {"done": done}


@apply_configuration.compensate
def remove_created(ctx):
    from backups.apply import undo_created

    restore = Restore.objects.select_related("tenant", "workflow__created_by").get(pk=ctx.params["restore"])
    left = undo_created(restore, _actor(restore))
    if left:
        _update_result(restore.pk, left_behind=left)
    return {"left": left}


def _repository(restore: Restore):
    from backups import keys

    return keys.open_for(restore.backup.location, tenant=restore.backup.tenant)


@step("restore.volume_data", max_attempts=60, backoff=2.0, backoff_max=10.0, transient=TRANSIENT)
def restore_volume_data(ctx):
    """Each volume's backup into its directory on this node, once its create workflow made it."""
    from storage.models import Volume
    from storage.steps import provider_of

    restore = _restore(ctx)
    repository = None
    restored = []
    for item in ctx.step.params["volumes"]:
        volume = Volume.objects.select_related("pool").filter(pk=item["volume"]).first()
        if volume is None:
            raise ValueError(f"volume {item['name']} is gone: its data cannot be restored")
        if volume.status == Volume.Status.CREATING:
            raise TransientError(f"volume {volume.name} is still being created")
        if volume.status not in (Volume.Status.READY, Volume.Status.BUSY):
            raise ValueError(f"volume {volume.name} is {volume.status}: {volume.message or 'not usable'}")
        repository = repository or _repository(restore)
        with provider_of(volume.pool).writable(volume.handle) as root:  # attached here for it when it must be
            result = repository.restore(item["snapshot"], root)
        restored.append({"volume": volume.name, "files": result.files, "bytes": result.bytes_written})
    return {"volumes": restored}


@step("restore.files", max_attempts=3, backoff=5.0, transient=TRANSIENT)
def restore_files_step(ctx):
    from backups.restores import restore_files
    from storage.models import Volume
    from storage.steps import provider_of

    restore = _restore(ctx)
    files = restore.selection["files"]
    volume = Volume.objects.select_related("pool").get(pk=ctx.step.params["volume"])
    snapshot = next(a["object"]["snapshot"] for a in restore.plan if a["kind"] == "file")
    with provider_of(volume.pool).writable(volume.handle) as root:
        return restore_files(_repository(restore), snapshot, files["paths"], root, files["into_path"])


@step("restore.apps", max_attempts=3, timeout=600, backoff=5.0)
def apply_apps(ctx):
    from backups.apply import apply_actions

    restore = _restore(ctx)
    last = [a for a in restore.plan if a["kind"] in LAST_KINDS]
    return {"done": apply_actions(restore, last, _actor(restore))}


@step("restore.finish", max_attempts=3)
def finish(ctx):
    restore = _restore(ctx)
    outputs = {}
    for planned in ctx.workflow.steps.filter(phase="forward").order_by("index"):
        if planned.name != "restore.finish" and planned.output:
            outputs.setdefault(planned.name, []).append(planned.output)
    _update_result(restore.pk, steps=outputs)
    Restore.objects.filter(pk=restore.pk).update(status=Restore.Status.SUCCEEDED, finished_at=timezone.now())
    return {"restore": restore.pk}
