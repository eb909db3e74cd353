"""`hivemind app` as a subprocess against the real web process (gunicorn), real Celery workers
(the controller and this machine's agent) and the suite's real Docker daemon."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time

import pytest
import yaml
from django.conf import settings

from hivemind.applications.models import App
from hivemind.workflows.models import Workflow
from tenants import services
from tests.applications.conftest import node  # noqa: F401 - this machine as a ready node
from tests.cli.conftest import login_as, one_error_line

HERE = settings.NODE_NAME  # the node the fixture registers: this machine

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE = "hivemind/busybox:latest"
# Says hello once, then ticks every second: something to read with `app logs --follow`.
TICKER = "sh -c 'echo hello from $(hostname); while sleep 1; do echo tick; done'"


def deploy(cli, name: str, *flags: str):
    return cli("app", "deploy", "--name", name, "--image", IMAGE, "--memory", "16Mi", *flags)


def rows(result) -> list[list[str]]:
    return [line.split() for line in result.out.splitlines()[1:]]


def follow(cli, *args: str, lines: int, timeout: float = 20) -> tuple[list[str], int]:
    """Run `hivemind app logs --follow`, read `lines` lines, then Ctrl-C it; (lines, exit code)."""
    proc = subprocess.Popen(
        [cli.executable, "app", "logs", *args, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli.env,
        text=True,
    )
    got: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < lines and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break
                got.append(line.rstrip("\n"))
    finally:
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=10)
    assert proc.stderr.read() == ""
    return got, code


def test_an_app_from_deploy_to_delete(cli, web_server, world, platform_processes, node):  # noqa: F811
    platform_processes("worker")
    login_as(cli, web_server, world, "operator")

    deployed = deploy(
        cli, "web", "--replicas", "2", "--command", TICKER, "--env", "MODE=test", "--health-cmd", "true",
        "--health-interval", "0.5", "--cpu", "50m",
    )  # fmt: skip
    assert deployed.code == 0, deployed
    assert deployed.err == ""
    workflow = Workflow.objects.get(subject=f"app:{App.objects.get(name='web').pk}")
    out = deployed.out.splitlines()
    assert out[0] == f"Deploying web (2 replicas) in tenant tenant-a: workflow {workflow.pk}"
    assert out[1].startswith(f"workflow {workflow.pk} (app.rollout in tenant tenant-a) "), deployed
    assert any(line.strip().startswith("step 1/") and "apps.plan succeeded" in line for line in out), deployed
    assert any("apps.start succeeded" in line for line in out), deployed
    assert out[-2].startswith(f"workflow {workflow.pk} succeeded in "), deployed
    assert out[-1] == "App web is running: 2/2 replicas running at revision 1."

    listed = cli("app", "ls")
    assert listed.code == 0, listed
    assert listed.out.splitlines()[0].split() == ["NAME", "STATUS", "RUNNING", "REVISION", "IMAGE", "AGE", "MESSAGE"]
    assert rows(listed)[0][:5] == ["web", "running", "2/2", "1", IMAGE]
    as_json = json.loads(cli("app", "ls", "-o", "json").out)
    assert [(a["name"], a["status"], a["running"], a["replicas"]) for a in as_json] == [("web", "running", 2, 2)]

    info = cli("app", "info", "web")
    assert info.code == 0, info
    fields, replicas = info.out.split("\n\n")
    fields = {key: value.strip() for key, value in (line.split(":", 1) for line in fields.splitlines())}
    assert fields["Replicas"] == "2 running of 2"
    assert fields["Env"] == "MODE"
    assert fields["Resources"] == "cpu 50m, memory 16.0 MiB"
    assert fields["Health"] == "cmd true every 0.5s, 3 retries"
    assert [line.split()[:4] for line in replicas.splitlines()[1:]] == [
        ["0", HERE, "running", "healthy"],
        ["1", HERE, "running", "healthy"],
    ]
    assert len(yaml.safe_load(cli("app", "info", "web", "-o", "yaml").out)["containers"]) == 2

    logs = cli("app", "logs", "web")
    assert logs.code == 0, logs
    hellos = sorted(line for line in logs.out.splitlines() if "hello" in line)
    assert [(line.split()[0], line.split(" ", 2)[2]) for line in hellos] == [
        ("[web-0]", "hello from web-0"),
        ("[web-1]", "hello from web-1"),
    ]
    last = cli("app", "logs", "web", "--tail", "1", "--replica", "1")
    assert [line.split()[0] for line in last.out.splitlines()] == ["[web-1]"]

    followed, code = follow(cli, "web", "--tail", "1", "--replica", "0", lines=4)
    assert code == 130  # Ctrl-C
    assert len(followed) == 4, followed
    assert all(line.startswith("[web-0] ") for line in followed), followed
    assert all(line.endswith(" tick") for line in followed[1:]), followed
    stamps = [line.split()[1] for line in followed]
    assert stamps == sorted(set(stamps))  # new lines only, in order, none twice

    stats = cli("app", "stats", "web")
    assert stats.code == 0, stats
    assert stats.out.splitlines()[0].split()[:5] == ["REPLICA", "NODE", "STATE", "CPU", "MEMORY"]
    assert [row[:3] for row in rows(stats)] == [["0", HERE, "running"], ["1", HERE, "running"]]
    figures = json.loads(cli("app", "stats", "web", "-o", "json").out)["containers"]
    assert all(entry["memory_usage_bytes"] > 0 and entry["error"] is None for entry in figures)

    scaled = cli("app", "scale", "web", "1")
    assert scaled.code == 0, scaled
    assert scaled.out.splitlines()[-1] == "App web is running: 1/1 replicas running at revision 1."

    updated = cli("app", "update", "web", "--env", "MODE=prod", "--env", "EXTRA=1")
    assert updated.code == 0, updated
    assert updated.out.splitlines()[-1] == "App web is running: 1/1 replicas running at revision 2."
    current = App.objects.select_related("revision").get(name="web").revision.spec
    assert current["env"] == {"MODE": "prod", "EXTRA": "1"}
    assert current["resources"]["cpu"] == 50  # millicores, unchanged by the round trip
    revisions = cli("app", "revisions", "web")
    assert [row[:3] for row in rows(revisions)] == [["2", "*", IMAGE], ["1", IMAGE, "created"]]

    kept = cli("app", "delete", "web", input="wrong\n")
    assert kept.code == 1, kept
    assert kept.err.splitlines()[-1] == "error: the name typed did not match; nothing was deleted"
    deleted = cli("app", "delete", "web", "--yes")
    assert deleted.code == 0, deleted
    assert deleted.out.splitlines()[-1] == "Deleted app web."
    assert not App.objects.filter(name="web").exists()
    empty = cli("app", "ls")
    assert (empty.code, empty.out, empty.err.strip()) == (0, "", "No apps in tenant tenant-a.")
    gone = cli("app", "logs", "web")
    assert gone.code == 6, gone
    assert one_error_line(gone) == "app web not found in tenant tenant-a"


def test_a_deploy_that_cannot_be_placed_exits_1_naming_the_step(cli, web_server, world, platform_processes, node):  # noqa: F811
    platform_processes("worker")
    login_as(cli, web_server, world, "operator")

    failed = deploy(cli, "picky", "--replicas", "2", "--node-selector", "disk=nvme")
    assert failed.code == 1, failed
    app = App.objects.get(name="picky")
    workflow = Workflow.objects.get(subject=f"app:{app.pk}")
    error = one_error_line(failed)
    assert error.startswith(f"workflow {workflow.pk} failed at step 1 (apps.plan) after 1 attempt: "), error
    assert "cannot place 2 of 2 new replica(s) of picky: 0/1 nodes available" in error
    assert "node selector" in failed.err
    assert failed.out.splitlines()[-1] == f"workflow {workflow.pk} failed"

    listed = cli("app", "ls")
    assert rows(listed)[0][:3] == ["picky", "failed", "0/2"]
    again = deploy(cli, "picky")
    assert again.code == 7, again
    assert one_error_line(again) == "an app named picky exists in tenant tenant-a"

    started = deploy(cli, "later", "--no-wait", "-o", "json")
    assert started.code == 0, started
    later = Workflow.objects.get(pk=json.loads(started.out)["workflow"])
    assert later.subject == f"app:{App.objects.get(name='later').pk}"


def test_refusals_and_their_exit_codes(cli, web_server, world):
    login_as(cli, web_server, world, "operator")

    bad_memory = deploy(cli, "web", "--memory", "lots")  # checked before sending, by the server's parser
    assert bad_memory.code == 2, bad_memory
    expected = "--memory: expected a size such as 512Mi, 10Gi or a number of bytes, got 'lots'"
    assert one_error_line(bad_memory) == expected
    bad_port = deploy(cli, "web", "--port", "80:http")
    assert bad_port.code == 1, bad_port
    assert one_error_line(bad_port).startswith("ports[0].container_port: ")
    assert not App.objects.exists()

    unknown = [("scale", "nope", "2"), ("logs", "nope"), ("stats", "nope"), ("info", "nope"), ("delete", "nope", "-y")]
    for args in unknown:
        missing = cli("app", *args)
        assert missing.code == 6, (args, missing)
        assert one_error_line(missing) == "app nope not found in tenant tenant-a"
    elsewhere = cli("app", "ls", "--tenant", "nope")
    assert elsewhere.code == 6, elsewhere
    assert one_error_line(elsewhere) == "tenant nope not found"

    both = deploy(cli, "web", "--health-cmd", "true", "--health-tcp", "80")
    assert both.code == 2
    assert one_error_line(both) == "give one of --health-cmd, --health-http and --health-tcp"
    env = deploy(cli, "web", "--env", "NOVALUE")
    assert env.code == 2
    assert one_error_line(env) == "--env: expected KEY=VALUE, got 'NOVALUE'"

    login_as(cli, web_server, world, "viewer")
    refused = deploy(cli, "web")
    assert refused.code == 5, refused
    assert not App.objects.exists()

    # A viewer sees the app but may not change it: 5, not 6.
    login_as(cli, web_server, world, "operator")
    assert deploy(cli, "web", "--no-wait").code == 0  # no worker: its workflow waits, the app exists
    login_as(cli, web_server, world, "viewer")
    assert cli("app", "info", "web").code == 0
    scaled = cli("app", "scale", "web", "3")
    assert scaled.code == 5, scaled
    assert one_error_line(scaled) == "you may not change this app"
    assert App.objects.get(name="web").replicas == 1


def test_an_exceeded_quota_exits_7_and_changes_nothing(cli, web_server, world):
    services.quota_set(tenant=world.a, limits={"containers": 2}, actor=world.users["staff"])
    login_as(cli, web_server, world, "operator")

    over = deploy(cli, "web", "--replicas", "3")
    assert over.code == 7, over
    assert one_error_line(over) == (
        "quota exceeded for containers in tenant tenant-a: limit 2 count, in use 0, requested 3"
    )
    assert not App.objects.exists()

    assert deploy(cli, "web", "--replicas", "2", "--no-wait").code == 0  # exactly the quota
    more = cli("app", "scale", "web", "3")
    assert more.code == 7, more
    assert one_error_line(more).startswith("quota exceeded for containers in tenant tenant-a: limit 2")
    assert App.objects.get(name="web").replicas == 2
    usage = json.loads(cli("tenant", "usage", "-o", "json").out)["resources"]["containers"]
    assert (usage["used"], usage["limit"]) == (2, 2)


def test_a_waited_deploy_draws_a_bar_on_a_terminal_and_a_missing_image_fails_at_its_step(
    cli,
    web_server,
    world,
    platform_processes,
    node,  # noqa: F811
):
    platform_processes("worker")
    login_as(cli, web_server, world, "operator")

    # A person at a terminal sees the bar redrawn in place, then the outcome.
    shown = cli.on_terminal("app", "deploy", "--name", "web", "--image", IMAGE, "--memory", "16Mi")
    assert shown.code == 0, shown
    assert shown.err == ""
    workflow = Workflow.objects.get(subject=f"app:{App.objects.get(name='web').pk}")
    steps = workflow.steps.filter(phase="forward").count()
    frames = shown.out.split("\r")
    assert len(frames) > 2, shown  # redrawn, not printed line by line
    assert any(re.search(rf"\[[#-]+\]\s+\d/{steps}\b", frame) for frame in frames), shown
    assert f"{steps}/{steps}" in shown.out, shown
    assert re.search(rf"workflow {workflow.pk} \x1b\[32msucceeded\x1b\[0m in ", shown.out), shown
    assert shown.out.rstrip().splitlines()[-1].startswith("App web is \x1b[32mrunning\x1b[0m: 1/1 replicas"), shown

    missing = "hivemind/no-such-image:1"
    failed = cli("app", "deploy", "--name", "ghost", "--image", missing, "--memory", "16Mi")
    assert failed.code == 1, failed
    ghost = Workflow.objects.get(subject=f"app:{App.objects.get(name='ghost').pk}")
    error = one_error_line(failed)
    assert re.match(rf"workflow {ghost.pk} failed at step \d+ \(apps\.start\) after 1 attempt: ", error), error
    assert f"image {missing} not found" in error
    assert "apps.plan succeeded" in failed.out
    assert f"apps.start failed after 1 attempt: RuntimeError: image {missing} not found" in failed.out
    assert failed.out.splitlines()[-1] == f"workflow {ghost.pk} failed"
    assert [row[:3] for row in rows(cli("app", "ls"))] == [["ghost", "failed", "0/1"], ["web", "running", "1/1"]]
