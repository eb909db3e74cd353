"""An app's logs and resource figures, read from the Docker of each container's node.

The web process cannot reach another node's Docker, so it asks the agents: one task per
node (`apps.container_logs`, `apps.container_stats`) on that node's queue, all sent at
once, and the answers awaited together for at most ANSWER_TIMEOUT seconds. A node that
does not answer in time, is not ready, or whose Docker refuses, gets an entry that says
so: one silent node never fails the whole request.

Read-only on both sides: the agent only reads containers that carry Hivemind's labels.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import docker
from celery import Task, shared_task
from celery.exceptions import TimeoutError as ResultTimeout
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from kombu.exceptions import OperationalError
from rest_framework.exceptions import APIException

from hivemind.applications.models import LABEL_APP, LABEL_MANAGED, App, Container
from hivemind.core.units import TIMESTAMP_HELP, parse_timestamp
from hivemind.nodes.models import Node

ANSWER_TIMEOUT = 10.0  # seconds the web process waits for the nodes' answers
MAX_TAIL = 10_000
DEFAULT_TAIL = 100
MAX_LINE = 16 * 1024  # characters kept of one log line
MAX_GREP = 200  # characters of a grep pattern
GREP_SCAN = 20_000  # lines of each replica (since `since`, from the end) a grep looks through
MAX_SINCE = timedelta(days=3650)
STATS_THREADS = 8
# The containers worth asking about: PENDING ones may be starting right now (their logs
# explain a failing deploy); REMOVED ones are gone.
ASKED_STATES = [
    Container.State.PENDING,
    Container.State.CREATED,
    Container.State.RUNNING,
    Container.State.EXITED,
    Container.State.MISSING,
]
SINCE_HELP = TIMESTAMP_HELP


class BrokerUnavailable(APIException):
    status_code = 503
    default_detail = "the broker does not answer, so the nodes cannot be asked; try again shortly"
    default_code = "broker_unavailable"


def parse_grep(value: str) -> re.Pattern:
    """A grep pattern: a Python regular expression (a plain word is one), 1 to MAX_GREP characters."""
    if not value:
        raise ValueError("expected a regular expression or a word to look for, e.g. error or (?i)timed? out")
    if len(value) > MAX_GREP:
        raise ValueError(f"at most {MAX_GREP} characters, got {len(value)}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """`300`, `90s`, `5m`, `2h`, `1d` (that long ago) or an ISO 8601 time (UTC when it has no offset)."""
    return parse_timestamp(value, now=now or timezone.now(), max_ago=MAX_SINCE.total_seconds())


# The agent's side: run by the worker that consumes node.<name>, against its own Docker. ---------


def _docker():
    from hivemind.nodes.runtime import docker_client

    return docker_client()


def _managed(client: docker.DockerClient, container: Container):
    """The Docker container of this replica, or None; never one Hivemind did not make."""
    try:
        found = client.containers.get(container.name)
    except docker.errors.NotFound:
        return None
    labels = found.labels or {}
    if labels.get(LABEL_MANAGED) != "true" or labels.get(LABEL_APP) != str(container.app_id):
        return None
    return found


def _absent(container: Container) -> str:
    return f"{container.name} is not on node {settings.NODE_NAME} (not created yet, or removed)"


def _docker_error(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return f"Docker on node {settings.NODE_NAME}: {explanation or exc}"


def _log_lines(raw: bytes) -> list[tuple[str, str]]:
    """Docker's `<RFC 3339 nano time> <text>` lines as (time, text)."""
    lines = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        stamp, _, text = line.partition(" ")
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + "…"
        lines.append((stamp, text))
    return lines


def containers_logs_read(
    *, container_ids: list[int], tail: int, since: float | None, grep: str | None = None
) -> list[dict]:
    """The last `tail` lines (since the Unix time `since`) of each container on this node; with
    `grep`, the last `tail` of those that match it among the last GREP_SCAN lines."""
    pattern = parse_grep(grep) if grep else None
    answers = []
    client = _docker()
    try:
        for container in Container.objects.filter(pk__in=container_ids):
            answer: dict = {"id": container.pk, "lines": [], "scanned": 0, "error": None}
            try:
                found = _managed(client, container)
                if found is None:
                    answer["error"] = _absent(container)
                else:
                    raw = found.logs(
                        stdout=True,
                        stderr=True,
                        timestamps=True,
                        tail=GREP_SCAN if pattern else tail,
                        since=since or None,
                    )
                    lines = _log_lines(raw)
                    answer["scanned"] = len(lines)
                    if pattern:
                        lines = [line for line in lines if pattern.search(line[1])][-tail:]
                    answer["lines"] = lines
            except docker.errors.DockerException as exc:
                answer["error"] = _docker_error(exc)
            answers.append(answer)
    finally:
        client.close()
    return answers


def stats_figures(raw: dict) -> dict:
    """Docker's one-shot stats as `docker stats` shows them: CPU % of one core times the
    cores, memory without the reclaimable page cache, bytes in and out on every network."""
    cpu, before = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (before.get("cpu_usage") or {}).get(
        "total_usage", 0
    )
    system_delta = (cpu.get("system_cpu_usage") or 0) - (before.get("system_cpu_usage") or 0)
    cores = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    cpu_percent = cpu_delta / system_delta * cores * 100 if cpu_delta > 0 and system_delta > 0 else 0.0
    memory = raw.get("memory_stats") or {}
    usage, details = memory.get("usage") or 0, memory.get("stats") or {}
    # cgroup v2 names it inactive_file, v1 total_inactive_file
    cache = details.get("inactive_file", details.get("total_inactive_file", 0)) or 0
    used = usage - cache if 0 < cache < usage else usage
    limit = memory.get("limit") or 0
    networks = (raw.get("networks") or {}).values()
    return {
        "cpu_percent": round(cpu_percent, 2),
        "memory_usage_bytes": used,
        "memory_limit_bytes": limit,
        "memory_percent": round(used / limit * 100, 2) if limit else None,
        "network_rx_bytes": sum(n.get("rx_bytes", 0) for n in networks),
        "network_tx_bytes": sum(n.get("tx_bytes", 0) for n in networks),
        "pids": (raw.get("pids_stats") or {}).get("current"),
    }


def _one_stats(client: docker.DockerClient, container: Container) -> dict:
    answer: dict = {"id": container.pk, "error": None}
    try:
        found = _managed(client, container)
        if found is None:
            answer["error"] = _absent(container)
        elif found.status != "running":
            answer["error"] = f"{container.name} is {found.status}, not running"
        else:
            # stream=False waits for a second sample, which the CPU figure needs.
            answer.update(stats_figures(found.stats(stream=False)))
    except docker.errors.DockerException as exc:
        answer["error"] = _docker_error(exc)
    return answer


def containers_stats_read(*, container_ids: list[int]) -> list[dict]:
    """CPU, memory and network figures of each container on this node, read side by side
    (Docker takes a second or two per container)."""
    containers = list(Container.objects.filter(pk__in=container_ids))
    if not containers:
        return []
    client = _docker()
    try:
        with ThreadPoolExecutor(max_workers=min(STATS_THREADS, len(containers))) as pool:
            return list(pool.map(lambda c: _one_stats(client, c), containers))
    finally:
        client.close()


# Not acknowledged late and never retried: the caller waits ANSWER_TIMEOUT seconds and is gone.
# Killed when it takes far longer than anyone waits (a regular expression that backtracks for ever).
@shared_task(
    name="apps.container_logs",
    ignore_result=False,
    acks_late=False,
    soft_time_limit=ANSWER_TIMEOUT + 1,
    time_limit=ANSWER_TIMEOUT + 5,
)
def container_logs(container_ids: list[int], tail: int, since: float | None = None, grep: str | None = None) -> list:
    """On node.<name>: the logs of these containers (ids), read from this node's Docker."""
    return containers_logs_read(container_ids=container_ids, tail=tail, since=since, grep=grep)


@shared_task(name="apps.container_stats", ignore_result=False, acks_late=False)
def container_stats(container_ids: list[int]) -> list[dict]:
    """On node.<name>: one-shot stats of these containers (ids), from this node's Docker."""
    return containers_stats_read(container_ids=container_ids)


# The web process's side. -------------------------------------------------------------------


def _ask_nodes(task: Task, containers: Iterable[Container], **kwargs) -> dict[int, dict | str]:
    """{container id: its node's answer, or why there is none}, after at most ANSWER_TIMEOUT s."""
    outcome: dict[int, dict | str] = {}
    by_node: dict[Node, list[Container]] = defaultdict(list)
    for container in containers:
        if container.node is None:
            outcome[container.pk] = "not placed on a node"
        elif container.node.status != Node.Status.READY:
            outcome[container.pk] = f"node {container.node.name} is not ready; its agent was not asked"
        else:
            by_node[container.node].append(container)
    asked = []
    try:
        for node, group in by_node.items():
            result = task.apply_async(
                kwargs={"container_ids": [c.pk for c in group], **kwargs},
                queue=node.queue,
                expires=ANSWER_TIMEOUT,  # a late agent drops the question instead of answering no one
            )
            asked.append((node, group, result))
    except OperationalError as exc:
        raise BrokerUnavailable() from exc
    deadline = time.monotonic() + ANSWER_TIMEOUT
    for node, group, result in asked:
        try:
            answers = result.get(timeout=max(deadline - time.monotonic(), 0.01), propagate=False)
            if result.successful():
                found = {answer["id"]: answer for answer in answers}
                reason = f"node {node.name} no longer knows it"
            else:
                found, reason = {}, f"node {node.name} could not answer: {type(answers).__name__}: {answers}"
        except ResultTimeout:
            found, reason = {}, f"node {node.name} did not answer within {ANSWER_TIMEOUT:g} s"
        finally:
            result.forget()
        for container in group:
            outcome[container.pk] = found.get(container.pk, reason)
    return outcome


def _containers(app: App, replica: int | None = None) -> list[Container]:
    containers = list(
        app.containers.filter(state__in=ASKED_STATES).select_related("node", "revision").order_by("replica", "id")
    )
    if replica is not None:
        chosen = [c for c in containers if c.replica == replica]
        if not chosen:
            have = ", ".join(str(n) for n in sorted({c.replica for c in containers})) or "none"
            raise ValidationError({"replica": f"app {app.name} has no replica {replica} (replicas: {have})"})
        containers = chosen
    return containers


def _entry(container: Container) -> dict:
    return {
        "replica": container.replica,
        "name": container.name,
        "node": container.node.name if container.node else None,
        "revision": container.revision.number,
        "state": container.state,
    }


def app_logs(
    *,
    app: App,
    tail: int = DEFAULT_TAIL,
    since: datetime | None = None,
    replica: int | None = None,
    grep: re.Pattern | None = None,
) -> dict:
    """The last `tail` lines of each replica (since `since`; with `grep`, of those that match it),
    merged in time order, each as `[<app>-<replica>] <time> <text>`; `containers` says what each
    replica answered. Each node's agent filters its own replicas' lines: only matches travel."""
    containers = _containers(app, replica)
    since_unix = since.timestamp() if since else None
    if since_unix is not None and since_unix <= 0:
        since_unix = None  # Docker takes no time before 1970; from then on is everything
    grep_text = grep.pattern if grep is not None else None
    answers = _ask_nodes(container_logs, containers, tail=tail, since=since_unix, grep=grep_text)
    lines: list[tuple[str, int, str]] = []
    entries = []
    for order, container in enumerate(containers):
        answer = answers[container.pk]
        got, error = ([], answer) if isinstance(answer, str) else (answer["lines"], answer["error"])
        scanned = 0 if isinstance(answer, str) else answer.get("scanned", len(got))
        prefix = f"[{app.name}-{container.replica}]"
        lines.extend((stamp, order, f"{prefix} {stamp} {text}") for stamp, text in got)
        entries.append({**_entry(container), "lines": len(got), "scanned": scanned, "error": error})
    lines.sort(key=lambda line: line[:2])  # Docker's times are fixed-width UTC: text order is time order
    return {
        "app": app.name,
        "tail": tail,
        "since": since.isoformat() if since else None,
        "grep": grep_text,
        "lines": [text for _, _, text in lines],
        "containers": entries,
    }


def app_stats(*, app: App) -> dict:
    """CPU, memory and network figures of every replica, as its node's Docker reports them."""
    containers = _containers(app)
    answers = _ask_nodes(container_stats, containers)
    entries = []
    for container in containers:
        answer = answers[container.pk]
        figures = dict.fromkeys(
            ("cpu_percent", "memory_usage_bytes", "memory_limit_bytes", "memory_percent", "network_rx_bytes",
             "network_tx_bytes", "pids"),
        )  # fmt: skip
        if isinstance(answer, str):
            error = answer
        else:
            error = answer["error"]
            figures.update({key: answer[key] for key in figures if key in answer})
        entries.append({**_entry(container), **figures, "error": error})
    return {"app": app.name, "containers": entries}
