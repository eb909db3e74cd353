"""`hivemind volume` and `hivemind pool` as subprocesses against the real web process, with a
real worker acting on a btrfs pool of this machine's node: every command from create to rm,
the app that mounts a volume, and the refusals with their exit codes."""

from __future__ import annotations

import json

from hivemind.applications.models import App
from storage.models import StoragePool, Volume
from storage.node import report_pools
from tests.applications.conftest import docker_replicas, node  # noqa: F401 (the node fixture)
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)


def test_volumes_from_create_to_rm(cli, web_server, world, platform_processes, node, btrfs_root, docker_client):  # noqa: F811
    platform_processes("worker")
    StoragePool.objects.create(name="suite", provider="btrfs", node=node, path=str(btrfs_root), is_default=True)
    report_pools(node.name)
    login_as(cli, web_server, world, "operator")

    made = cli("volume", "create", "data", "--size", "64Mi", "--label", "tier=db")
    assert made.code == 0, made
    assert "Volume data is ready." in made.out and "in pool suite on node" in made.out
    listed = cli("volume", "ls")
    assert listed.code == 0 and listed.out.splitlines()[1].split()[:4] == ["data", "ready", "64.0", "MiB"], listed

    deployed = cli(
        "app", "deploy", "--name", "db", "--image", "hivemind/busybox:latest", "--restart", "no",
        "--command", "sh -c 'echo hello > /data/greeting; exec sleep 3600'", "--volume", "data:/data",
    )  # fmt: skip
    assert deployed.code == 0, deployed
    info = cli("app", "info", "db")
    assert "Volumes:" in info.out and "data at /data" in info.out, info
    app = App.objects.get(name="db")
    running = next(c for c in docker_replicas(docker_client, app) if c.status == "running")
    assert running.exec_run(["cat", "/data/greeting"]).output.decode().strip() == "hello"

    assert cli("volume", "snapshot", "data", "first").code == 0
    snapshots = cli("volume", "snapshots", "data")
    assert snapshots.out.splitlines()[1].split()[:2] == ["first", "ready"], snapshots
    cloned = cli("volume", "clone", "data", "first", "copy")
    assert cloned.code == 0, cloned
    shown = cli("volume", "info", "copy", "-o", "json")
    assert json.loads(shown.out)["source"] == "data@first"
    assert cli("volume", "expand", "data", "128Mi").code == 0
    assert Volume.objects.get(name="data").size_bytes == 128 << 20

    shrink = cli("volume", "expand", "data", "1Mi")
    assert shrink.code == 1 and "cannot shrink" in one_error_line(shrink)
    in_use = cli("volume", "rm", "data", "--yes")
    assert in_use.code == 7 and "db" in one_error_line(in_use)
    taken = cli("volume", "create", "data", "--size", "1Gi", "--no-wait")
    assert taken.code == 7 and "exists" in one_error_line(taken)
    bad = cli("volume", "create", "other", "--size", "10Gx")
    assert bad.code == 2 and "--size" in bad.err
    mount = cli("app", "update", "db", "--volume", "data:relative/path")
    assert mount.code == 2 and "absolute" in mount.err
    missing = cli("volume", "info", "nope")
    assert missing.code == 6

    scheduled = cli("volume", "schedule", "data", "--every", "1h", "--keep", "6")
    assert scheduled.code == 0 and "every 3600 s, the newest 6 kept" in scheduled.out, scheduled
    assert "Snapshot schedule:  every 3600 s, keep 6" in cli("volume", "info", "data").out
    too_often = cli("volume", "schedule", "data", "--every", "5s")
    assert too_often.code == 2 and "--every" in too_often.err
    assert cli("volume", "schedule", "data", "--every", "off").code == 0
    assert cli("volume", "replica", "data").code == 6  # none yet
    nowhere = cli("volume", "replicate", "data", "--pool", "nope")
    assert nowhere.code == 1 and "nope" in one_error_line(nowhere)
    too_often = cli("volume", "replicate", "data", "--pool", "suite", "--interval", "1s")
    assert too_often.code == 2 and "--interval" in too_often.err
    same_node = cli("volume", "replicate", "data", "--pool", "suite")
    assert same_node.code != 0 and "node" in one_error_line(same_node)
    assert cli("volume", "snapshot-rm", "data", "first").code == 0
    assert cli("app", "delete", "db", "--yes").code == 0
    for name in ("copy", "data"):
        gone = cli("volume", "rm", name, "--yes")
        assert gone.code == 0, gone
    assert not Volume.objects.exists()

    login_as(cli, web_server, world, "staff")
    pools = cli("pool", "ls")
    assert pools.code == 0 and pools.out.splitlines()[1].split()[:3] == ["suite", "ready", "btrfs"], pools
    login_as(cli, web_server, world, "operator")
    assert cli("pool", "ls").code == 5
