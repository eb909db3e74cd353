"""The agent's own CPU while it samples 100 containers every 15 seconds (target < 5 % of one core).

One simulated node (tests/netsim.py: a network namespace with a private dockerd) runs
BENCH_CONTAINERS managed busybox containers (`sleep`); a fresh PostgreSQL database holds their
Container rows, as a node's would. The sampler the agent runs (observability/sampling.py
UsageSampler: Docker's one-shot stats of each, side by side on up to 64 threads, the machine's /proc,
one insert of the samples and the upsert of the latest figures) then runs in this process every
BENCH_INTERVAL seconds for BENCH_PASSES passes, as the agent's sampling thread does. Measured:
this process's CPU time (all its threads: the sampler is all it runs) over the wall time, as a
share of one core; each pass's duration; and, for information, dockerd's CPU over the same time
(answering stats is Docker's work, not the agent's).

Environment: BENCH_CONTAINERS (100), BENCH_INTERVAL (15), BENCH_PASSES (8).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fresh_database  # noqa: E402 - after the path is set

CONTAINERS = int(os.environ.get("BENCH_CONTAINERS", "100"))
INTERVAL = float(os.environ.get("BENCH_INTERVAL", "15"))
PASSES = int(os.environ.get("BENCH_PASSES", "8"))
IMAGE = "hivemind/busybox:latest"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dockerd_pids(netns_root: Path) -> list[int]:
    """The dockerd processes whose command line names the simulated node's directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "dockerd" in cmdline and str(netns_root) in cmdline:
                found.append(int(proc.name))
    return found


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("agent_sampling.py needs root (a network namespace and a dockerd of its own)")
    os.environ["HIVEMIND_DATABASE_URL"] = fresh_database("bench_sampling", "bench/agent_sampling.py")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from hivemind.applications.models import LABEL_MANAGED, App, AppRevision, Container
    from hivemind.nodes.models import Node
    from observability.models import UsageSample
    from observability.sampling import UsageSampler
    from tenants import services
    from tests.netsim import SimCluster

    call_command("migrate", verbosity=0)
    base = Path(settings.VAR_DIR) / "bench-sampling"
    cluster = SimCluster(1, sim_dir=base / "sim")
    (sim,) = cluster.start().nodes
    try:
        staff = get_user_model().objects.create_user("bench-staff", is_staff=True)
        tenant = services.tenant_create(name="Bench", slug="bench", created_by=staff)
        node = Node.objects.create(name=sim.name, status=Node.Status.READY, docker_host=sim.docker_host)
        app = App.objects.create(tenant=tenant, name="web", service_name="web", replicas=CONTAINERS)
        revision = AppRevision.objects.create(app=app, number=1, spec={"image": IMAGE})
        started = time.perf_counter()
        for replica in range(CONTAINERS):
            name = f"hm-bench-web-{replica}"
            sim.client.containers.run(
                IMAGE, ["sleep", "3600"], name=name, detach=True, network_mode="none",
                labels={LABEL_MANAGED: "true"}, stop_signal="SIGKILL",
            )  # fmt: skip
            Container.objects.create(
                tenant=tenant, app=app, revision=revision, replica=replica, node=node, name=name,
                state=Container.State.RUNNING,
            )  # fmt: skip
        print(f"{CONTAINERS} containers started in {time.perf_counter() - started:.1f} s")
        sampler = UsageSampler(node_name=sim.name, docker_host=sim.docker_host)
        sampler.sample()  # the baseline readings, and every import and connection made
        daemons = dockerd_pids(sim.root)
        me = os.getpid()
        cpu0, docker0, wall0 = cpu_seconds(me), sum(cpu_seconds(p) for p in daemons), time.monotonic()
        durations = []
        for number in range(PASSES):
            began = time.monotonic()
            stored = sampler.sample()
            durations.append(time.monotonic() - began)
            if stored != CONTAINERS:
                raise SystemExit(f"pass {number} stored {stored} samples, expected {CONTAINERS}")
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - began)))
        wall = time.monotonic() - wall0
        agent_cpu = cpu_seconds(me) - cpu0
        docker_cpu = sum(cpu_seconds(p) for p in daemons) - docker0
        sampler.close()
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {PASSES} passes every {INTERVAL:g} s "
              f"over {wall:.0f} s; {UsageSample.objects.count()} samples stored")  # fmt: skip
        print(f"agent (sampler) CPU: {agent_cpu:.2f} s = {agent_cpu / wall * 100:.2f} % of one core "
              f"({agent_cpu / PASSES * 1000:.0f} ms per pass)")  # fmt: skip
        print(f"pass duration: median {statistics.median(durations) * 1000:.0f} ms, max {max(durations) * 1000:.0f} ms")
        print(f"dockerd answering the stats: {docker_cpu:.2f} s = {docker_cpu / wall * 100:.2f} % of one core")
    finally:
        sim.clear_containers()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
