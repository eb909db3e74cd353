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

Tests are handed out a file at a time (`--dist loadgroup`, each file a group): a file's
module fixtures are built once, and tests in one file that share a fixed resource (a Redis
database number, a port) never run at the same time. Files that start a session's Ceph
cluster or network simulation go together, so that only one process pays for it. A file
marked `apart` (its tests share nothing fixed) has each test handed out alone. The groups
that start real processes are handed out first, so that no long one is left for the end.
"""

from __future__ import annotations

import os
import re

import pytest

WORKER_REDIS_DBS = (None, 12, 11, 10, 9, 8, 7, 6)  # gw0 keeps HIVEMIND_REDIS_URL's own database
# Expensive session fixtures: every file that uses one runs in the same process, which starts it
# once. A group, and the fixtures that lead to it (backup_location may be radosgw's, on Ceph); a
# file that asks for one by name at run time says so itself with `pytest.mark.xdist_group`.
SHARED_SESSION_FIXTURES = {
    "ceph": ("ceph_cluster", "radosgw_peer", "backup_location"),
    "sim_cluster": ("sim_cluster",),
}


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


# Tests that start real processes (a worker, the web, dockerd's containers, whole nodes): the long ones.
SLOW_FIXTURES = ("platform_processes", "web_server", "sim_cluster", "ceph_cluster", "docker_client", "busybox_image")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "apart: the file's tests share nothing fixed (no module fixture, port or database number of "
        "their own), so a parallel run may spread them over its processes",
    )


def pytest_collection_modifyitems(config, items):
    """Group the tests by file for `--dist loadgroup` (a file marked `apart`: each test alone), the
    users of a shared expensive session fixture into one group, and put the groups that start
    real processes first (`--no-loadscope-reorder` keeps this order): a long group handed out
    last would finish alone while the other processes sit idle. Only in xdist's workers, whose
    collections the run hands out."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    shared: dict[str, str] = {}
    for item in items:
        for group, fixtures in SHARED_SESSION_FIXTURES.items():
            if any(fixture in getattr(item, "fixturenames", ()) for fixture in fixtures):
                shared.setdefault(item.nodeid.split("::")[0], group)
    weight: dict[str, int] = {}
    groups = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        marked = item.get_closest_marker("xdist_group")
        if marked:
            group = marked.args[0] if marked.args else marked.kwargs.get("name", "default")
        else:
            group = item.nodeid if item.get_closest_marker("apart") else shared.get(path, path)
            item.add_marker(pytest.mark.xdist_group(group))
        groups[item.nodeid] = group
        slow = item.get_closest_marker("e2e") or any(f in getattr(item, "fixturenames", ()) for f in SLOW_FIXTURES)
        weight[group] = weight.get(group, 0) + (10 if slow else 1)
    items.sort(key=lambda item: -weight[groups[item.nodeid]])  # stable: a group's tests keep their order
