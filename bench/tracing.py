"""Tracing on against tracing off: the time of a deploy through the API, and what "off" costs.

Each round starts the real web process (gunicorn, as `manage.py up` starts it) and one
worker on the control queue and this node's queue (controller and agent, as bench/deploy.py
does), either with HIVEMIND_OTEL_ENABLED=false or with tracing on, exporting over OTLP/HTTP to
a receiver in this process (a real HTTP server decoding every export: the cost of sending is
in the figure, not the cost of a collector's storage). Rounds alternate off, on, off, on, …
after one warm-up of each; medians. A deploy's time runs from `POST /api/v1/apps/` until its
workflow has succeeded (placement, the tenant network, the replicas created and started by
the agent, each seen running). Target: on <= 1.1 x off.

"Off" against no instrumentation at all: with tracing off nothing of OpenTelemetry's SDK or
instrumentations is loaded (tests/observability/test_tracing.py checks it), so what remains is
what the engine itself calls per step and per workflow — the no-op tracer's span, the stored
traceparent parsed, the log context. That is timed here in a loop against the same loop
without those calls, and multiplied by the calls one deploy makes.

Environment: BENCH_REPLICAS (10), BENCH_ROUNDS (3).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))
from support import fmt, free_port, fresh_database, wait  # noqa: E402 - after the path is set

REPLICAS = int(os.environ.get("BENCH_REPLICAS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
IMAGE = "hivemind/busybox:latest"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def off_cost_per_step(iterations: int = 20000) -> tuple[float, float]:
    """Microseconds per step and per workflow creation of what the engine calls for tracing
    and log context when tracing is off, above the same loop without them."""
    from hivemind.core.logs import log_context
    from hivemind.core.tracing import tracer, workflow_context

    traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    attributes = {"hivemind.workflow_id": 1, "hivemind.step": "apps.start", "hivemind.tenant": "default"}

    def with_calls():
        for _ in range(iterations):
            with (
                log_context(tenant="default", workflow_id=1, step="apps.start", trace_id="ab" * 16),
                tracer().start_as_current_span(
                    "workflow step apps.start", context=workflow_context(traceparent), attributes=attributes
                ) as span,
            ):
                span.is_recording()

    def without():
        for _ in range(iterations):
            attributes.get("hivemind.step")

    def timed(loop) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            loop()
            best = min(best, time.perf_counter() - start)
        return best / iterations * 1e6

    return timed(with_calls) - timed(without), timed(without)


def main() -> None:
    os.environ["HIVEMIND_DATABASE_URL"] = fresh_database("bench_tracing", "bench/tracing.py")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    os.environ.pop("HIVEMIND_OTEL_ENABLED", None)  # this process never traces: "off" is exactly off
    import django

    django.setup()
    import redis
    import requests
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from hivemind.applications import services
    from hivemind.applications.models import App
    from hivemind.celery import ping
    from hivemind.config import load_config
    from hivemind.core import bootstrap
    from hivemind.core.processes import process_spec
    from hivemind.nodes.models import Node
    from hivemind.nodes.runtime import docker_client
    from hivemind.workflows.models import TERMINAL_STATES, Workflow, WorkflowState
    from tenants import services as tenant_services
    from tenants.models import Tenant
    from tests.observability.otlp import OTLPReceiver

    call_command("migrate", verbosity=0)
    daemon = bootstrap.ensure_dockerd(settings.DOCKER_HOST, settings.VAR_DIR / "docker", own_bridge=False)
    client = docker_client()
    bootstrap.ensure_busybox_image(client)
    tenant = Tenant.objects.get(slug="default")
    staff = get_user_model().objects.create_user("bench", is_staff=True)
    _, token = tenant_services.api_token_create(user=staff, name="bench")
    receiver = OTLPReceiver().start()
    bindir = str(Path(sys.executable).parent)
    spec = {"image": IMAGE, "command": "sleep 3600", "resources": {"cpu": "10m", "memory": "8Mi"}}
    logs_dir = settings.VAR_DIR / "bench-tracing"
    logs_dir.mkdir(parents=True, exist_ok=True)

    def start_platform(traced: bool, port: int) -> list[subprocess.Popen]:
        env = {**os.environ, "HIVEMIND_LOG_LEVEL": "WARNING", "HIVEMIND_WEB_BIND": f"127.0.0.1:{port}"}
        if traced:
            env.update(HIVEMIND_OTEL_ENABLED="true", HIVEMIND_OTEL_ENDPOINT=receiver.endpoint)
        else:
            env["HIVEMIND_OTEL_ENABLED"] = "false"
        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        web = process_spec("web", config=load_config(env), bindir=bindir).argv
        worker = [
            f"{bindir}/celery", "-A", "hivemind", "worker", "-Q", f"{settings.CONTROL_QUEUE},{settings.NODE_QUEUE}",
            "-c", str(settings.CONFIG.worker_concurrency), "-l", "WARNING", "-n", "bench@%h",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        mode = "on" if traced else "off"
        started = []
        for name, argv in (("web", web), ("worker", worker)):
            out = (logs_dir / f"{name}-{mode}.log").open("ab")
            started.append(
                subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            )
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return requests.get(f"{base}/admin/login/", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait(answers, 60, "the web process")
        wait(
            lambda: Node.objects.filter(name=settings.NODE_NAME, status=Node.Status.READY).exists(),
            60,
            "the agent to register this node",
        )
        ping.apply_async(queue=settings.NODE_QUEUE).get(timeout=60)  # this worker consumes the node's queue
        return started

    def stop_platform(processes: list[subprocess.Popen]) -> None:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def deploy_round(number: int, traced: bool) -> tuple[float, int]:
        port = free_port()
        processes = start_platform(traced, port)
        try:
            before = len(receiver.received())
            start = time.perf_counter()
            answer = requests.post(
                f"http://127.0.0.1:{port}/api/v1/apps/",
                json={"tenant": tenant.slug, "name": f"bench-{number}", "spec": spec, "replicas": REPLICAS},
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            if answer.status_code != 202:
                raise SystemExit(f"the deploy was refused: {answer.status_code} {answer.text}")
            workflow = Workflow.objects.get(subject=f"app:{answer.json()['id']}")
            wait(lambda: workflow.refresh_from_db() or workflow.state in TERMINAL_STATES, 600, "the deploy")
            elapsed = time.perf_counter() - start
            if workflow.state != WorkflowState.SUCCEEDED:
                raise SystemExit(f"the deploy failed: {workflow.error}")
            delete = services.app_delete(app=App.objects.get(pk=workflow.subject.split(":")[1]), actor=staff)
            wait(lambda: delete.refresh_from_db() or delete.state in TERMINAL_STATES, 600, "the delete")
            spans = 0
            if traced:
                time.sleep(6)  # the batch processors' 5 s delay: this round's spans arrive
                spans = len(receiver.trace(workflow.trace_id))
                if spans == 0 or len(receiver.received()) == before:
                    raise SystemExit("tracing was on but no span of the deploy arrived")
            return elapsed, spans
        finally:
            stop_platform(processes)

    try:
        deploy_round(0, False), deploy_round(100, True)  # warm up: image layers, the tenant network
        offs, ons, spans = [], [], []
        for number in range(1, ROUNDS + 1):
            offs.append(deploy_round(number, False)[0])
            elapsed, count = deploy_round(100 + number, True)
            ons.append(elapsed)
            spans.append(count)
        off, on = statistics.median(offs), statistics.median(ons)
        per_step, loop = off_cost_per_step()
        steps = Workflow.objects.filter(kind="app.rollout", state=WorkflowState.SUCCEEDED).first().step_count
        print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        print(f"deploy of {REPLICAS} replicas through the API, tracing off  {off:6.2f} s  rounds {fmt(offs)}")
        print(f"deploy of {REPLICAS} replicas through the API, tracing on   {on:6.2f} s  rounds {fmt(ons)}")
        print(f"ratio on/off                                      {on / off:.2f}x  (target <= 1.1x)")
        print(f"spans exported per traced deploy                  {fmt(spans).replace('.00', '')}")
        print(
            f"off against no instrumentation: {per_step:.2f} us per step and per workflow creation "
            f"(loop alone {loop:.2f} us); x {steps + 1} per deploy = {per_step * (steps + 1) / 1000:.3f} ms, "
            f"{per_step * (steps + 1) / 1e6 / off * 100:.4f} % of the deploy"
        )
    finally:
        receiver.stop()
        client.close()
        daemon.stop()


if __name__ == "__main__":
    main()
