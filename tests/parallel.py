"""Running the suite in parallel processes (pytest-xdist) without the processes meeting.

`make test` runs the suite in `HIVEMIND_TEST_WORKERS` processes (`-n`, default: one more
than the cores, at most 8). Each process is a whole test session of its own, so each needs
what a session owns alone:

- its own var dir (`<HIVEMIND_VAR_DIR>-gwN` from gw1 on), and so its own Docker daemon (its socket
  lives there), its own node network namespace (named after the var dir) and its own
  loop files and mounts;
- its own Redis database (`WORKER_REDIS_DBS`: none of them is one a test names itself:
  5, 13 and 14 are taken by the disaster-recovery and e2e tests);
- its own PostgreSQL test database, which pytest-django already suffixes with `_gwN`.

The first process (gw0) keeps the values it was given, so `-n 1` and a plain `pytest` run
use what they always did. This module is loaded with `-p tests.parallel` (pyproject's
addopts) before pytest-django reads the settings, which is the only moment the environment
can still change what Django sees.

Tests are handed out a file at a time (`--dist loadfile`): a file's module fixtures are built
once, and tests in one file that share a fixed resource (a Redis database number, a port)
never run at the same time. (Not `loadgroup`: with pytest 9 its group marks change no test's
id, so xdist 3.8 hands the tests of a group out one by one.) The files that start real
processes are handed out first, so that no long one is left for the end. A session's Ceph
cluster or node simulation starts in each process that runs a file using it.
"""

from __future__ import annotations

import os
import re

import pytest

WORKER_REDIS_DBS = (None, 12, 11, 10, 9, 8, 7, 6)  # gw0 keeps HIVEMIND_REDIS_URL's own database
# Tests that start real processes (a worker, the web, dockerd's containers, whole nodes): the long ones.
SLOW_FIXTURES = ("platform_processes", "web_server", "sim_cluster", "ceph_cluster", "docker_client", "busybox_image")


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    match = re.fullmatch(r"gw(\d+)", worker)
    return int(match.group(1)) if match else 0


def _isolate(index: int) -> None:
    if index >= len(WORKER_REDIS_DBS):
        raise pytest.UsageError(f"the suite runs in at most {len(WORKER_REDIS_DBS)} processes (-n), not {index + 1}")
    missing = [name for name in ("HIVEMIND_VAR_DIR", "HIVEMIND_REDIS_URL") if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(f"a parallel run (-n) needs {' and '.join(missing)} set, as `make test` does")
    base = os.environ["HIVEMIND_VAR_DIR"].rstrip("/")
    var_dir = f"{base}-gw{index}"
    os.environ["HIVEMIND_VAR_DIR"] = var_dir
    docker_host = os.environ.get("HIVEMIND_DOCKER_HOST", "")
    if docker_host.startswith(f"unix://{base}/"):
        os.environ["HIVEMIND_DOCKER_HOST"] = f"unix://{var_dir}/" + docker_host.removeprefix(f"unix://{base}/")
    redis_url = os.environ["HIVEMIND_REDIS_URL"]
    head, _, _db = redis_url.rpartition("/")
    if "://" not in head:  # no database in the URL: it was database 0
        head = redis_url.rstrip("/")
    os.environ["HIVEMIND_REDIS_URL"] = f"{head}/{WORKER_REDIS_DBS[index]}"


if (_index := _worker_index()) > 0:
    _isolate(_index)


def pytest_collection_modifyitems(config, items):
    """Put the files that start real processes first, the most such tests first, so that no
    long file is handed out last to finish alone while the other processes sit idle
    (`--no-loadscope-reorder` keeps this order). Only in xdist's workers, whose collections
    the run hands out."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    weight: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        slow = item.get_closest_marker("e2e") or any(f in getattr(item, "fixturenames", ()) for f in SLOW_FIXTURES)
        weight[path] = weight.get(path, 0) + (10 if slow else 1)
    items.sort(key=lambda item: -weight[item.nodeid.split("::")[0]])  # stable: a file's tests keep their order
