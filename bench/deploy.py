"""A 20-replica deploy through Hivemind against 20 `containers.run` through the docker SDK.

Both on the same Docker daemon (the suite's private one, vfs storage), same image
(hivemind/busybox), command, network kind (a user-defined bridge), restart policy and
memory reservation, in alternating rounds, medians. A replica's tenant network is
dual-stack, which costs Docker itself more per container, so the SDK runs 8 at a time on
a dual-stack bridge of the same MTU as well. Hivemind's time runs from
`app_deploy` (API service: validation, quota, revision, workflow) until the workflow has
succeeded: placement, the tenant network, 20 containers created and started by the node
agent, each seen running. The SDK's time runs until the 20th `containers.run` returned
(Docker has started it), one after another as the issue's baseline, and also 8 at a time
as the agent makes them, which shows what the platform itself adds to Docker's work.
Targets (issue 18): Hivemind <= 0.8 x the SDK one by one, and <= 1.05 x the SDK with the
same parallelism.

Environment: BENCH_REPLICAS (20), BENCH_ROUNDS (3).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from docker.types import IPAMConfig, IPAMPool

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt, fresh_database, wait  # noqa: E402 - after the path is set

REPLICAS = int(os.environ.get("BENCH_REPLICAS", "20"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
IMAGE = "hivemind/busybox:latest"


def main() -> None:
    os.environ["HIVEMIND_DATABASE_URL"] = fresh_database("bench_deploy", "bench/deploy.py")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from hivemind.applications import services
    from hivemind.applications.models import App
    from hivemind.applications.steps import PARALLEL
    from hivemind.core import bootstrap
    from hivemind.nodes.models import Node
    from hivemind.nodes.runtime import docker_client
    from hivemind.workflows.models import TERMINAL_STATES, WorkflowState
    from networking.node import clear_node
    from tenants.models import Tenant

    call_command("migrate", verbosity=0)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    daemon = bootstrap.ensure_dockerd(settings.DOCKER_HOST, settings.VAR_DIR / "docker", own_bridge=False)
    client = docker_client()
    bootstrap.ensure_busybox_image(client)
    tenant = Tenant.objects.get(slug="default")
    staff = get_user_model().objects.create_user("bench", is_staff=True)
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "hivemind", "worker", "-Q",
         f"{settings.CONTROL_QUEUE},{settings.NODE_QUEUE}", "-c", str(settings.CONFIG.worker_concurrency),
         "-l", "WARNING", "-n", "bench@%h", "--without-mingle", "--without-gossip"],
        cwd=REPO, env={**os.environ, "HIVEMIND_LOG_LEVEL": "WARNING"}, start_new_session=True,
    )  # fmt: skip
    spec = {"image": IMAGE, "command": "sleep 3600", "resources": {"cpu": "10m", "memory": "8Mi"}}
    try:
        wait(
            lambda: Node.objects.filter(name=settings.NODE_NAME, status=Node.Status.READY).exists(),
            60,
            "the agent to register this node",
        )

        # The SDK side gets what a replica gets: a user-defined bridge network, a restart
        # policy and a memory reservation (the daemon has no default bridge).
        for stale in client.networks.list(names=["bench-sdk"]):
            stale.remove()
        network = client.networks.create("bench-sdk", driver="bridge")

        def sdk_run(_=None, *, on: str = "bench-sdk"):
            return client.containers.run(
                IMAGE,
                "sleep 3600",
                detach=True,
                labels={"bench": "sdk"},
                network=on,
                restart_policy={"Name": "always"},
                mem_reservation=8 * 2**20,
            )

        def sdk_round(parallel: int = 1, *, on: str = "bench-sdk") -> float:
            """20 `containers.run`, one after another (the issue's baseline), or `parallel` at a
            time as the agent makes them (how much of Hivemind's time is Docker's); `on` the
            IPv4 bridge, or the dual-stack one a replica gets."""
            start = time.perf_counter()
            if parallel == 1:
                made = [sdk_run(on=on) for _ in range(REPLICAS)]
            else:
                with ThreadPoolExecutor(max_workers=parallel) as pool:
                    made = list(pool.map(lambda _: sdk_run(on=on), range(REPLICAS)))
            elapsed = time.perf_counter() - start
            for container in made:
                container.remove(force=True)
            return elapsed

        timelines = []

        def timeline(workflow) -> str:
            """Where the time went: each step's wait for a worker and its run, from the Step rows."""
            parts, previous = [], workflow.created_at
            for step in workflow.steps.order_by("index"):
                wait_ms = (step.started_at - previous).total_seconds() * 1000
                run_ms = (step.finished_at - step.started_at).total_seconds() * 1000
                parts.append(f"{step.name} wait {wait_ms:.0f} run {run_ms:.0f}")
                previous = step.finished_at
            return "; ".join(parts) + " (ms)"

        def hivemind_round(number: int) -> float:
            start = time.perf_counter()
            app = services.app_deploy(tenant=tenant, name=f"bench-{number}", spec=spec, replicas=REPLICAS, actor=staff)
            workflow = app.workflow
            wait(lambda: workflow.refresh_from_db() or workflow.state in TERMINAL_STATES, 600, "the deploy")
            elapsed = time.perf_counter() - start
            if workflow.state != WorkflowState.SUCCEEDED:
                raise SystemExit(f"the deploy failed: {workflow.error}")
            timelines.append(timeline(workflow))
            delete = services.app_delete(app=App.objects.get(pk=app.pk), actor=staff)
            wait(lambda: delete.refresh_from_db() or delete.state in TERMINAL_STATES, 600, "the delete")
            return elapsed

        sdk_round(), hivemind_round(0)  # warm up: image layers, the tenant network
        # The tenant network is dual-stack: Docker's own work per container is larger there (an
        # IPv6 address, its routes and sysctls), so the SDK also runs on a dual-stack bridge of
        # the same MTU, which separates what the platform adds from what IPv6 costs Docker.
        mtu = next(
            (n.attrs["Options"].get("com.docker.network.driver.mtu") for n in client.networks.list(names=["hm-net-"])),
            None,
        )
        for stale in client.networks.list(names=["bench-sdk46"]):
            stale.remove()
        dual = client.networks.create(
            "bench-sdk46", driver="bridge", enable_ipv6=True,
            options={"com.docker.network.driver.mtu": mtu} if mtu else {},
            ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="10.254.254.0/24"), IPAMPool(subnet="fd00:be:c4::/64")]),
        )  # fmt: skip
        sdks, parallels, duals, hiveminds = [], [], [], []
        for number in range(1, ROUNDS + 1):
            sdks.append(sdk_round())
            parallels.append(sdk_round(PARALLEL))
            duals.append(sdk_round(PARALLEL, on=dual.name))
            hiveminds.append(hivemind_round(number))
        sdk, par, hm = statistics.median(sdks), statistics.median(parallels), statistics.median(hiveminds)
        par46 = statistics.median(duals)
        print(f"docker SDK containers.run, one by one   {REPLICAS} containers  {sdk:6.2f} s  rounds {fmt(sdks)}")
        together = f"docker SDK containers.run, {PARALLEL} at a time"
        print(f"{together}  {REPLICAS} containers  {par:6.2f} s  rounds {fmt(parallels)}")
        print(f"{together}, dual-stack  {par46:6.2f} s  rounds {fmt(duals)}")
        print(f"Hivemind deploy (dual-stack network)    {REPLICAS} replicas    {hm:6.2f} s  rounds {fmt(hiveminds)}")
        print(f"ratio Hivemind/SDK one by one           {hm / sdk:.2f}x  (target <= 0.8x)")
        print(f"ratio Hivemind/SDK {PARALLEL} at a time          {hm / par:.2f}x  (target <= 1.05x)")
        print(f"ratio Hivemind/SDK {PARALLEL} at a time, both dual-stack  {hm / par46:.2f}x")
        for number, line in enumerate(timelines[1:], 1):
            print(f"  round {number}: {line}")
        network.remove()
        dual.remove()
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        # The tenant network's devices and Docker network go too: Docker would restore them at
        # its next start, in front of the test suite that shares this var dir.
        clear_node(client, node=settings.NODE_NAME, netns=settings.CONFIG.node_netns)
        client.close()
        daemon.stop()


if __name__ == "__main__":
    main()
