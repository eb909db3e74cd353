"""Latency of the probes a load balancer and Prometheus hit all day: /api/v1/health/ and /metrics.

Runs the real WSGI stack in-process (no network) against the suite's Redis and
Docker daemon; prints p50 and p99 over N requests. Run with `make bench`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
N = int(os.environ.get("BENCH_REQUESTS", "300"))


def main() -> None:
    os.environ["HIVEMIND_DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test import Client

    from hivemind.core import bootstrap

    daemon = bootstrap.ensure_dockerd(settings.DOCKER_HOST, settings.VAR_DIR / "docker", own_bridge=False)
    client = Client(HTTP_HOST="localhost")
    try:
        for path in ("/api/v1/health/", "/metrics"):
            assert client.get(path).status_code == 200, path
            samples = []
            for _ in range(N):
                start = time.perf_counter()
                client.get(path)
                samples.append((time.perf_counter() - start) * 1000)
            samples.sort()
            p50 = statistics.median(samples)
            p99 = samples[int(len(samples) * 0.99) - 1]
            print(f"{path:<18} n={N}  p50={p50:6.2f} ms  p99={p99:6.2f} ms")
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
