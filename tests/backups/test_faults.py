"""Backup runs under faults, with real workers, a real btrfs pool and real locations: the node's
worker killed (SIGKILL, pool children too) in the middle of a volume's upload, and the Azure
server (Azurite) stopped in the middle of another and started again on the same port and data
directory. Either way the run must end in one of two clean states: succeeded, its data
restoring byte-identical, or failed with nothing of it visible in the repository. The
repository then verifies with every pack read, and a backup made before the fault still
restores byte-identical.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from backups import keys, runs, services
from backups.models import Backup
from backups.runs import snapshot_ids
from hivemind.workflows.models import StepState
from storage.models import Volume
from storage.steps import provider_of
from tests.backups import peers
from tests.backups.test_runs import make_pool, same_tree, this_node
from tests.conftest import free_port, wait_for
from tests.storage.conftest import btrfs_mount, btrfs_root  # noqa: F401 - the session's btrfs file system

MiB = 1 << 20
# The tests strike when the volume's first 16 MiB pack is stored, while the rest is still being
# read: more than five packs' worth against Azurite (two were too few: on a quiet moment the
# rest was stored before the server stopped), four against a local directory (faster).
FILE_SIZE = 4 * MiB
DOWN = 6  # seconds the Azure server stays down: longer than the SDK's own retries (stores/azure.py)


def fill(directory: Path, files: int) -> None:
    for n in range(files):
        (directory / f"f{n}").write_bytes(os.urandom(FILE_SIZE))


def make_volume(tenant, pool) -> Volume:
    """A ready volume of 128 MiB, made as its create workflow makes it, without running one."""
    volume = Volume.objects.create(tenant=tenant, name="data", pool=pool, size_bytes=128 * MiB, status="ready")
    provider_of(pool).create(volume.handle, volume.size_bytes)
    return volume


def packs(store) -> list[str]:
    return [key for key, _ in store.list("data/")]


def running_step(backup: Backup):
    """The backups.volumes step row once it runs."""
    return backup.workflow.steps.filter(name="backups.volumes", state=StepState.RUNNING).first()


def finished(backup: Backup, timeout: float) -> Backup:
    workflow = backup.workflow

    def done():
        workflow.refresh_from_db()
        return workflow.is_terminal

    wait_for(done, timeout, f"backup {backup.pk} to finish (workflow {workflow.state})", interval=0.2)
    backup.refresh_from_db()
    return backup


def clean_outcome(backup: Backup, location, source: Path, restore_to: Path) -> str:
    """Assert the run ended in one of the two clean states; name it."""
    repository = keys.open_for(location)
    written = [info for info in repository.snapshots() if info.meta.get("backup") == backup.pk]
    if backup.status == Backup.Status.SUCCEEDED:
        [entry] = backup.volumes
        assert entry["state"] == "done" and {info.id for info in written} == set(snapshot_ids(backup))
        repository.restore(entry["snapshot"], restore_to)
        same_tree(source, restore_to)
        return "succeeded"
    assert backup.status == Backup.Status.FAILED, backup.status
    assert backup.error and backup.finished_at is not None
    assert written == [] and snapshot_ids(backup) == [], written  # nothing of the failed run stays visible
    return "failed"


def verifies(location) -> None:
    report = keys.open_for(location).verify(read_data=True)
    assert report.ok, (report.damaged, report.affected)
    assert report.packs_read == report.packs > 0
    # Packs a dead attempt stored but never indexed are no damage: a prune removes them.
    print(f"verified: {report.packs} packs read, {len(report.unindexed_packs)} unindexed left by the fault")


def test_a_worker_killed_mid_upload_is_resumed_and_the_repository_verifies(
    platform_processes, world, btrfs_root, tmp_path  # noqa: F811
):  # fmt: skip
    first = platform_processes("worker")
    platform_processes("beat")
    pool = make_pool(this_node(), btrfs_root)
    volume = make_volume(world.a, pool)
    source = provider_of(pool).path(volume.handle)
    fill(source, 16)
    location = services.location_create(
        tenant=world.a, name="here", kind="local", config={"path": f"faults-{secrets.token_hex(6)}"}, actor=None
    )
    try:
        store = services.store_for(location)
        backup = runs.backup_start(tenant=world.a, location=location, scope="volumes", names=["data"], actor=None)
        wait_for(lambda: running_step(backup), 60, "the volume step to run")
        before = set(packs(store))  # the configuration document's, stored by the step before
        wait_for(lambda: set(packs(store)) - before, 60, "the volume's first pack to be stored", interval=0.02)
        killed = time.monotonic()
        first.kill()  # SIGKILL: the worker and its pool children, mid-upload, message unacknowledged
        backup.refresh_from_db()
        assert backup.status == Backup.Status.RUNNING and backup.volumes[0]["state"] == "running"
        platform_processes("worker")
        backup = finished(backup, 60)
        outcome = clean_outcome(backup, location, source, tmp_path / "restored")
        step = backup.workflow.steps.get(name="backups.volumes", phase="forward")
        print(f"worker killed: backup {outcome} {time.monotonic() - killed:.1f} s later, attempts {step.attempts}")
        assert step.attempts >= 2 and "stopped answering" in step.history[0]["error"], step.history
        verifies(location)
    finally:
        shutil.rmtree(location.config["path"], ignore_errors=True)


def start_azurite(directory: Path, port: int) -> subprocess.Popen:
    """Azurite's blob service on `port` with its data under `directory` (peers.start_azurite's
    command, on a port of our choosing: a restart keeps the address and finds its data again)."""
    command = [str(peers.AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
               str(directory / "data"), "--skipApiVersionCheck", "--disableTelemetry", "--loose"]  # fmt: skip
    process, log = peers._start("azurite", command, directory)
    try:
        peers._wait("azurite-blob", process, log, f"http://127.0.0.1:{port}/{peers.AZURITE_ACCOUNT}?comp=list")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    """Stop Azurite as a server is stopped: SIGTERM, its open connections dropped. (SIGKILL
    would lose what the emulator holds in memory of its own metadata, which a real server
    never loses once it has answered.)"""
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def azurite(tmp_path):
    """A started Azurite of this test's own (the session's is shared: it must not be stopped),
    with the container made; `azurite.restart()` stops it and starts it again on the same port
    and directory."""
    from azure.storage.blob import BlobServiceClient

    port, directory = free_port(), tmp_path / "azurite"

    class Server:
        process = start_azurite(directory, port)
        account_url = f"http://127.0.0.1:{port}/{peers.AZURITE_ACCOUNT}"

        def start(self) -> None:
            self.process = start_azurite(directory, port)

        def stop(self) -> None:
            stop(self.process)

    server = Server()
    credential = {"account_name": peers.AZURITE_ACCOUNT, "account_key": peers.AZURITE_KEY}
    BlobServiceClient(server.account_url, credential=credential).create_container(peers.BUCKET)
    yield server
    server.stop()


def test_an_azure_server_dying_mid_upload_loses_nothing_and_the_run_ends_cleanly(
    platform_processes, world, btrfs_root, azurite, tmp_path  # noqa: F811
):  # fmt: skip
    platform_processes("worker")
    platform_processes("beat")
    pool = make_pool(this_node(), btrfs_root)
    volume = make_volume(world.a, pool)
    source = provider_of(pool).path(volume.handle)
    (source / "before").write_bytes(os.urandom(MiB))
    location = services.location_create(
        tenant=world.a, name="azure", kind="azure", actor=None,
        config={"account_url": azurite.account_url, "container": peers.BUCKET, "prefix": "faults"},
        secrets={"account_key": peers.AZURITE_KEY},
    )  # fmt: skip
    earlier = finished(runs.backup_start(tenant=world.a, location=location, scope="volumes", names=["data"],
                                         actor=None), 60)  # fmt: skip
    assert earlier.status == Backup.Status.SUCCEEDED, earlier.error
    kept = tmp_path / "kept"
    shutil.copytree(source, kept, symlinks=True)

    fill(source, 24)
    store = services.store_for(location)
    backup = runs.backup_start(tenant=world.a, location=location, scope="volumes", names=["data"], actor=None)
    wait_for(lambda: running_step(backup), 60, "the volume step to run")
    before = set(packs(store))  # the configuration document's, stored by the step before
    wait_for(lambda: set(packs(store)) - before, 60, "the volume's first new pack")
    backup.refresh_from_db()
    assert backup.status == Backup.Status.RUNNING and backup.volumes[0]["state"] == "running"
    struck = time.monotonic()
    azurite.stop()
    time.sleep(DOWN)
    azurite.start()
    backup = finished(backup, 60)
    outcome = clean_outcome(backup, location, source, tmp_path / "restored")
    step = backup.workflow.steps.get(name="backups.volumes", phase="forward")
    print(f"azurite down {DOWN} s: backup {outcome} {time.monotonic() - struck:.1f} s later, attempts {step.attempts}")
    # Down longer than the SDK's own retries: the attempt under way failed, naming the server's
    # silence as something to try again, and the step's next attempt (after its backoff) ran.
    assert step.attempts >= 2, step.history
    assert step.history[0]["error"].startswith("StoreUnavailable: azure:http://127.0.0.1:"), step.history
    assert "Connection refused" in step.history[0]["error"], step.history
    verifies(location)
    again = tmp_path / "earlier"
    keys.open_for(location).restore(earlier.volumes[0]["snapshot"], again)
    same_tree(kept, again)


def test_a_server_that_does_not_answer_is_unavailable_and_one_that_refuses_is_not(azure_peer):
    """Every cloud store names a server it cannot reach StoreUnavailable (a ConnectionError: the
    workflow steps try again later); a server's own refusal stays a plain StoreError."""
    from backups.stores import AzureStore, GCSStore, S3Store, StoreError, StoreUnavailable
    from hivemind.workflows.registry import DEFAULT_TRANSIENT

    nobody = f"http://127.0.0.1:{free_port()}"  # a port no one listens on: the connection is refused
    stores = [
        S3Store(bucket="b", endpoint_url=nobody, access_key_id="AKIDEXAMPLE", secret_access_key="wJalr", attempts=1),
        AzureStore(account_url=f"{nobody}/{peers.AZURITE_ACCOUNT}", container="c", account_key="a2V5", retries=0),
        GCSStore(bucket="b", endpoint=nobody, retry_deadline=0.5),
    ]
    for store in stores:
        for name, args in (("put", ("a/b", b"x")), ("get", ("a/b",)), ("list", ())):
            with pytest.raises(StoreUnavailable) as caught:
                list(getattr(store, name)(*args) or [])
            assert isinstance(caught.value, DEFAULT_TRANSIENT) and store.describe() in str(caught.value)
    refusing = AzureStore(account_url=azure_peer.config["account_url"], container="no-such-container",
                          account_key=peers.AZURITE_KEY)  # fmt: skip
    with pytest.raises(StoreError, match="ContainerNotFound") as caught:
        refusing.put("a/b", b"x")
    assert not isinstance(caught.value, StoreUnavailable | ConnectionError)
