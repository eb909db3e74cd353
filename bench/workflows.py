"""The workflow engine against raw Celery, on the same worker in one run.

200 workflows of 10 no-op steps through the engine (rows, locks check, claim, output,
heartbeat bookkeeping, metrics, spans) against 200 raw Celery chains of 10 no-op tasks
(results stored in Redis, Celery's default). Both on one worker process pool
(`celery worker -Q control -c N`, N = HIVEMIND_WORKER_CONCURRENCY as the platform runs its
workers, or BENCH_CONCURRENCY), PostgreSQL and Redis. Prints the time and steps/s of
each and the ratio. Target: engine time <= 1.5 x raw Celery time.

Environment: BENCH_WORKFLOWS (200), BENCH_STEPS (10), BENCH_CONCURRENCY (HIVEMIND_WORKER_CONCURRENCY), BENCH_ROUNDS (3).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import ServerCpu, fmt, fresh_database, wait  # noqa: E402 - after the path is set

N = int(os.environ.get("BENCH_WORKFLOWS", "200"))
STEPS = int(os.environ.get("BENCH_STEPS", "10"))
CONCURRENCY = os.environ.get("BENCH_CONCURRENCY")  # default: HIVEMIND_WORKER_CONCURRENCY, as the platform runs
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def main() -> None:
    os.environ["HIVEMIND_DATABASE_URL"] = fresh_database("bench", "bench/workflows.py")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    import redis
    from celery import chain
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from hivemind.workflows import engine
    from hivemind.workflows.models import TERMINAL_STATES, Workflow, WorkflowState
    from hivemind.workflows.tasks import raw_noop
    from tenants.models import Tenant

    call_command("migrate", verbosity=0)
    concurrency = CONCURRENCY or str(settings.CONFIG.worker_concurrency)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    tenant = Tenant.objects.get(slug="default")
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "hivemind", "worker", "-Q", settings.CONTROL_QUEUE,
         "-c", concurrency, "-l", "WARNING", "-n", "bench@%h", "--without-mingle", "--without-gossip"],
        # The same log level for both sides: -l WARNING for Celery, HIVEMIND_LOG_LEVEL for the engine.
        cwd=REPO, env={**os.environ, "HIVEMIND_LOG_LEVEL": "WARNING"}, start_new_session=True,
    )  # fmt: skip
    try:
        raw_noop.apply_async(queue=settings.CONTROL_QUEUE).get(timeout=60)  # the worker is up

        cpu: dict[str, list[tuple[float, float]]] = {"raw": [], "engine": []}

        def measured(side: str, run, count: int) -> float:
            """`run(count)`, and the CPU the worker's processes and PostgreSQL spent per step."""
            with ServerCpu(worker.pid, connection.settings_dict["NAME"]) as used:
                elapsed = run(count)
            cpu[side].append((used.used("web") / (count * STEPS) * 1000, used.used("db") / (count * STEPS) * 1000))
            return elapsed

        def raw_run(count: int) -> float:
            start = time.perf_counter()
            results = [
                chain(*[raw_noop.si().set(queue=settings.CONTROL_QUEUE) for _ in range(STEPS)]).apply_async()
                for _ in range(count)
            ]
            for result in results:
                result.get(timeout=600)
            return time.perf_counter() - start

        last: list[int] = []

        def engine_run(count: int) -> float:
            start = time.perf_counter()
            ids = [engine.workflow_create(kind="noop", tenant=tenant, params={"steps": STEPS}).pk for _ in range(count)]
            last[:] = ids
            active = Workflow.objects.filter(pk__gte=ids[0], pk__lte=ids[-1]).exclude(state__in=TERMINAL_STATES)
            wait(lambda: not active.exists(), 600, "the engine's workflows")
            elapsed = time.perf_counter() - start
            failed = Workflow.objects.filter(pk__in=ids).exclude(state=WorkflowState.SUCCEEDED).count()
            if failed:
                raise SystemExit(f"{failed} workflows did not succeed")
            return elapsed

        raw_run(10), engine_run(10)  # warm both paths up
        raws, engines = [], []
        for _ in range(ROUNDS):  # alternate, so a noisy moment on the machine hits both sides
            raws.append(measured("raw", raw_run, N))
            engines.append(measured("engine", engine_run, N))
        raw, hm = statistics.median(raws), statistics.median(engines)
        steps = N * STEPS
        print(f"worker: celery -Q {settings.CONTROL_QUEUE} -c {concurrency}; {ROUNDS} alternating rounds, medians")
        for label, value, rounds in (("raw Celery chains ", raw, raws), ("Hivemind workflows", hm, engines)):
            print(f"{label}  {N} x {STEPS} steps  {value:7.2f} s  {steps / value:8.1f} steps/s  rounds {fmt(rounds)}")
        print(f"ratio engine/raw    {hm / raw:.2f}x  (target <= 1.20x at the platform's setting, <= 1.50x at -c 2)")
        for side in ("raw", "engine"):
            worker_ms = statistics.median(w for w, _ in cpu[side])
            db_ms = statistics.median(d for _, d in cpu[side])
            print(f"CPU per step, {side:<6}  worker {worker_ms:.2f} ms + PostgreSQL {db_ms:.2f} ms (Redis not counted)")
        _breakdown(last, f"the last round, {N} workflows at once: hops include the queue")
        engine_run(1)
        _breakdown(last, "one workflow alone")
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def _breakdown(ids: list[int], label: str) -> None:
    """Where the steps' time went in workflows `ids`, from the rows: `first` from the workflow's
    creation to its first step's claim (the API's send, the broker, the claim); `run` from a
    claim to its result row (the step and its record); `hop` from a result to the next step's
    claim (dispatching the next message, the broker, the claim)."""
    from hivemind.workflows.models import Step, Workflow

    created = dict(Workflow.objects.filter(pk__in=ids).values_list("pk", "created_at"))
    steps = Step.objects.filter(workflow_id__in=ids, phase="forward").order_by("workflow_id", "index")
    rows = list(steps.values_list("workflow_id", "index", "started_at", "finished_at"))
    first, run, hop = [], [], []
    previous = None
    for workflow, index, started, finished in rows:
        run.append((finished - started).total_seconds())
        if index == 0:
            first.append((started - created[workflow]).total_seconds())
        elif previous is not None and previous[0] == workflow:
            hop.append((started - previous[1]).total_seconds())
        previous = (workflow, finished)
    named = (("first", first), ("run", run), ("hop", hop))
    parts = ", ".join(f"{name} {statistics.median(values) * 1000:.1f} ms" for name, values in named)
    print(f"a step's time ({label}; medians over {len(rows)} steps): {parts}")


if __name__ == "__main__":
    main()
