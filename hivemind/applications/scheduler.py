"""The scheduler: which node each replica of an app runs on.

Pure functions on plain dataclasses, so that placing 10,000 replicas onto 5,000 nodes takes
a second or two and every rule can be tested without a database; `nodes_for_scheduling()`
is the thin adapter that builds the nodes from the ORM.

A request passes the filters in this order, and a node that fails one is counted under the
first it fails when a replica cannot be placed: node state (not ready, cordoned, draining),
tenant isolation, node selector, taints (NoSchedule and NoExecute not tolerated), required
affinity then required anti-affinity, free cpu, free memory. Of the nodes that pass, the
one with the highest score wins, ties going to the first node name:

    score = resources                        0..1000: spread prefers the emptiest node after
                                             placing, binpack the fullest (1000 - spread's)
          - 1000 x replicas of the same app on the node (unless placement.spread is false)
          + 10 x weight of each preferred affinity term the node matches
          - 10 x weight of each preferred anti-affinity term it matches
          - 1000 x each PreferNoSchedule taint the request does not tolerate

Isolation: a node labelled `hivemind.io/tenant=<slug>` is dedicated to that tenant, and no
other tenant's replica goes there; a tenant with hard isolation uses only its dedicated
nodes, soft and network-only tenants use the shared ones and their own.

A weight of 100 is worth the whole resource range, and so is one replica of the same app:
by default an app's replicas go to different nodes while any other node fits. Terms are
ANDed: a node must match every required affinity term and none of the required
anti-affinity terms. As in Kubernetes, a required affinity to the app's own replicas is met
by every node while the app has no replica anywhere, so that its first replica can start.

`place_reference()` is that definition written as plainly as possible (every request looks
at every node). `place()` gives the same decisions faster: the static filters and score
terms are worked out once per (tenant, isolation, placement), and each group of identical
requests keeps a heap of its candidates, where only the nodes that received a replica since
the group's last turn are scored again. The tests compare the two on random clusters.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hivemind.applications.spec import NODE_NAME_LABEL

TENANT_LABEL = "hivemind.io/tenant"  # a node labelled with a tenant's slug is dedicated to that tenant
ISOLATION_LEVELS = ("hard", "soft", "network-only")
STRATEGIES = ("spread", "binpack")
NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE = "NoSchedule", "PreferNoSchedule", "NoExecute"
TAINT_EFFECTS = (NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE)
NODE_STATES = ("ready", "not-ready", "cordoned", "draining")  # as Node.state reports them

RESOURCE_RANGE = 1000  # the resource score runs from 0 to this
WEIGHT_POINTS = 10  # points per unit of a preferred term's weight (1-100)
SPREAD_PENALTY = 1000  # per replica of the same app already on the node
PREFER_NO_SCHEDULE_PENALTY = 1000  # per PreferNoSchedule taint not tolerated

AppKey = tuple[str, str]  # (tenant slug, app name): app terms only ever name apps of the same tenant


# --- what the scheduler works on -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = NO_SCHEDULE

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True, slots=True)
class Toleration:
    """Kubernetes' rules: Exists matches any value of `key` (or every taint when `key` is
    empty), Equal needs the same key and value; an empty `effect` matches every effect."""

    key: str = ""
    value: str = ""
    effect: str = ""
    operator: str = "Equal"

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True, slots=True)
class Term:
    """Nodes carrying all of `node_labels`, or (with `app`) nodes running a replica of that
    app of the same tenant."""

    node_labels: tuple[tuple[str, str], ...] = ()
    app: str | None = None

    def __str__(self) -> str:
        if self.app is not None:
            return f"app {self.app}"
        return f"labels {_pairs(self.node_labels)}"


@dataclass(frozen=True, slots=True)
class WeightedTerm:
    weight: int  # 1-100
    term: Term


@dataclass(frozen=True, slots=True)
class Placement:
    """An app spec's `placement`, in a hashable form (see `Placement.from_spec`)."""

    node_selector: tuple[tuple[str, str], ...] = ()
    required_affinity: tuple[Term, ...] = ()
    preferred_affinity: tuple[WeightedTerm, ...] = ()
    required_anti_affinity: tuple[Term, ...] = ()
    preferred_anti_affinity: tuple[WeightedTerm, ...] = ()
    spread: bool = True
    tolerations: tuple[Toleration, ...] = ()
    strategy: str = "spread"

    @classmethod
    def from_spec(cls, value: Mapping[str, Any] | None) -> Placement:
        """Build from the spec's placement dict (the form `spec.clean_placement` returns; the
        same keys as users write them also work). Raises ValueError naming the field."""
        return _parse_placement(value)


@dataclass(slots=True)
class NodeInfo:
    """A node as the scheduler sees it. Free capacity is capacity minus the requests of the
    node's containers that are not removed; it defaults to the whole capacity."""

    name: str
    cpu_capacity: int  # millicores
    memory_capacity: int  # bytes
    cpu_free: int | None = None
    memory_free: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    state: str = "ready"  # one of NODE_STATES
    app_replicas: dict[AppKey, int] = field(default_factory=dict)  # replicas per (tenant, app) here
    id: int | None = None  # the Node row's primary key, when built from the database

    def __post_init__(self) -> None:
        if self.cpu_free is None:
            self.cpu_free = self.cpu_capacity
        if self.memory_free is None:
            self.memory_free = self.memory_capacity
        if self.state not in NODE_STATES:
            raise ValueError(f"node {self.name}: state must be one of {', '.join(NODE_STATES)}, got {self.state!r}")
        if self.labels.get(NODE_NAME_LABEL) != self.name:  # every node carries its own name as a label
            self.labels = {**self.labels, NODE_NAME_LABEL: self.name}

    @property
    def schedulable(self) -> bool:
        return self.state == "ready"

    @property
    def tenant_label(self) -> str | None:
        """The slug of the tenant this node is dedicated to, if any."""
        return self.labels.get(TENANT_LABEL)


@dataclass(frozen=True, slots=True)
class Request:
    """One replica to place. `placement` may be given as the spec's dict; build one
    Placement per app with `Placement.from_spec` and share it when placing many replicas."""

    tenant: str  # slug
    app: str
    cpu_millis: int
    memory_bytes: int
    isolation: str = "soft"  # the tenant's isolation_level
    placement: Placement = Placement()
    replica: int | None = None  # the caller's replica slot, carried through to the Decision

    def __post_init__(self) -> None:
        if not isinstance(self.placement, Placement):
            object.__setattr__(self, "placement", Placement.from_spec(self.placement))
        if self.isolation not in ISOLATION_LEVELS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATION_LEVELS)}, got {self.isolation!r}")
        for name in ("cpu_millis", "memory_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number of at least 0, got {value!r}")

    @property
    def app_key(self) -> AppKey:
        return (self.tenant, self.app)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request goes: a node, or None and why no node would take it."""

    request: Request
    node: str | None
    node_id: int | None = None
    score: int | None = None
    explanation: str = ""

    @property
    def placed(self) -> bool:
        return self.node is not None


# --- the definition: filters, score and the plain placement loop ------------------------------


def node_score(node: NodeInfo, request: Request) -> int:
    """The score of a node that passes the filters (higher is better; see the module doc)."""
    placement = request.placement
    cpu_left = node.cpu_free - request.cpu_millis
    memory_left = node.memory_free - request.memory_bytes
    free = (_permille(cpu_left, node.cpu_capacity) + _permille(memory_left, node.memory_capacity)) // 2
    score = free if placement.strategy == "spread" else RESOURCE_RANGE - free
    if placement.spread:
        score -= SPREAD_PENALTY * node.app_replicas.get(request.app_key, 0)
    for preferred in placement.preferred_affinity:
        if _matches(node, preferred.term, request.tenant):
            score += WEIGHT_POINTS * preferred.weight
    for preferred in placement.preferred_anti_affinity:
        if _matches(node, preferred.term, request.tenant):
            score -= WEIGHT_POINTS * preferred.weight
    for taint in node.taints:
        if taint.effect == PREFER_NO_SCHEDULE and not _tolerated(taint, placement.tolerations):
            score -= PREFER_NO_SCHEDULE_PENALTY
    return score


def explain(request: Request, nodes: Sequence[NodeInfo]) -> str:
    """Kubernetes-style: `0/5 nodes available: 2 not ready, 1 insufficient memory (needs
    512Mi, most free 256Mi), ...`, each node counted under the first filter it fails; the
    largest counts first, then alphabetically."""
    if not nodes:
        return "0/0 nodes available: no nodes are registered"
    first = _first_replica(request, nodes)
    counts: dict[str, int] = defaultdict(int)
    most_free: dict[str, int] = {}
    for node in nodes:
        reason = _unfit(node, request, first)
        if reason is None:
            continue
        text, free = reason
        counts[text] += 1
        if free is not None:
            most_free[text] = max(most_free.get(text, free), free)
    available = len(nodes) - sum(counts.values())
    parts = [
        (count, _resource_text(text, request, most_free[text]) if text in most_free else text)
        for text, count in counts.items()
    ]
    parts.sort(key=lambda part: (-part[0], part[1]))
    summary = f"{available}/{len(nodes)} nodes available"
    return f"{summary}: {', '.join(f'{count} {text}' for count, text in parts)}" if parts else summary


def place_reference(requests: Iterable[Request], nodes: Sequence[NodeInfo]) -> list[Decision]:
    """The definition of placement, written plainly: each request in turn scores every node.
    Too slow for thousands of nodes; `place()` must decide exactly the same."""
    work = _working_copies(nodes)
    decisions = []
    for request in requests:
        best, best_score = None, 0
        first = _first_replica(request, work)
        for node in work:
            if _unfit(node, request, first) is not None:
                continue
            score = node_score(node, request)
            if best is None or score > best_score or (score == best_score and node.name < best.name):
                best, best_score = node, score
        if best is None:
            decisions.append(Decision(request, None, explanation=explain(request, work)))
        else:
            _take(best, request)
            decisions.append(Decision(request, best.name, best.id, best_score))
    return decisions


# --- the fast path ----------------------------------------------------------------------------


def place(requests: Iterable[Request], nodes: Sequence[NodeInfo]) -> list[Decision]:
    """Place `requests` one after another, each seeing the replicas placed before it.

    The nodes given are not changed (the scheduler works on copies). A request no node can
    take gets a Decision with node None and an explanation, and the next ones carry on.
    """
    cluster = _Cluster(_working_copies(nodes))
    groups: dict[tuple, _Group] = {}
    decisions = []
    for request in requests:
        key = (request.app_key, request.isolation, request.cpu_millis, request.memory_bytes, request.placement)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(request, cluster)
        else:
            group.catch_up()
        best = group.best()
        if best is None:
            decisions.append(Decision(request, None, explanation=group.explain()))
            continue
        index, score = best
        node = cluster.take(index, request)
        decisions.append(Decision(request, node.name, node.id, score))
    return decisions


class _Cluster:
    """The working copies of the nodes and what `place()` did to them so far."""

    def __init__(self, work: list[NodeInfo]):
        self.work = work
        self.versions = [0] * len(work)  # bumped whenever a node receives a replica
        self.placed_on: list[int] = []  # the node index of every placement so far, in order
        self.replicas: dict[AppKey, int] = defaultdict(int)  # replicas of each app on all nodes
        for node in work:
            for key, count in node.app_replicas.items():
                self.replicas[key] += count
        self.statics: dict[tuple, tuple[list[int], list[int | None]]] = {}

    def take(self, index: int, request: Request) -> NodeInfo:
        node = self.work[index]
        _take(node, request)
        self.versions[index] += 1
        self.placed_on.append(index)
        self.replicas[request.app_key] += 1
        return node


class _Group:
    """Identical requests (same tenant, app, resources and placement): a heap of
    (-score, name, index, version) over the nodes that pass every filter. An entry whose
    node has received a replica since (its version changed) is stale and dropped; before
    each turn the nodes placed on since the group's last turn are scored again."""

    def __init__(self, request: Request, cluster: _Cluster):
        placement, tenant = request.placement, request.tenant
        self.request, self.cluster, self.work, self.versions = request, cluster, cluster.work, cluster.versions
        static_key = (tenant, request.isolation, placement)
        if static_key not in cluster.statics:
            cluster.statics[static_key] = _static_scores(request, cluster.work)
        self.candidates, self.static = cluster.statics[static_key]
        self.cpu, self.memory = request.cpu_millis, request.memory_bytes
        self.spread_strategy = placement.strategy == "spread"
        self.own = request.app_key if placement.spread else None
        self.all_needs = [(tenant, t.app) for t in placement.required_affinity if t.app is not None]
        self.avoids = [(tenant, t.app) for t in placement.required_anti_affinity if t.app is not None]
        self.prefers = [
            ((tenant, p.term.app), sign * WEIGHT_POINTS * p.weight)
            for sign, terms in ((1, placement.preferred_affinity), (-1, placement.preferred_anti_affinity))
            for p in terms
            if p.term.app is not None
        ]
        self.explained: tuple[int, str] | None = None
        self.build()

    def build(self) -> None:
        """Score every candidate in the cluster's current state."""
        # The first replica of an app that requires its own replicas' company may go anywhere.
        key = self.request.app_key
        self.first = key in self.all_needs and not self.cluster.replicas.get(key)
        self.needs = [need for need in self.all_needs if not (self.first and need == key)]
        self.heap = [entry for entry in map(self.entry, self.candidates) if entry is not None]
        heapq.heapify(self.heap)
        self.seen = len(self.cluster.placed_on)

    def entry(self, index: int) -> tuple[int, str, int, int] | None:
        """The heap entry of a candidate node in its current state, or None if it does not fit."""
        node = self.work[index]
        cpu_left = node.cpu_free - self.cpu
        memory_left = node.memory_free - self.memory
        if cpu_left < 0 or memory_left < 0:
            return None
        replicas = node.app_replicas
        for key in self.needs:
            if not replicas.get(key):
                return None
        for key in self.avoids:
            if replicas.get(key):
                return None
        cpu, memory = node.cpu_capacity, node.memory_capacity
        free = ((cpu_left * 1000 // cpu if cpu > 0 else 0) + (memory_left * 1000 // memory if memory > 0 else 0)) // 2
        score = self.static[index] + (free if self.spread_strategy else RESOURCE_RANGE - free)
        if self.own is not None:
            score -= SPREAD_PENALTY * replicas.get(self.own, 0)
        for key, points in self.prefers:
            if replicas.get(key):
                score += points
        return (-score, node.name, index, self.versions[index])

    def catch_up(self) -> None:
        placed_on = self.cluster.placed_on
        if self.seen == len(placed_on):
            return
        if self.first and self.cluster.replicas.get(self.request.app_key):
            self.build()  # its first replica is placed: from now on it needs their company
            return
        fresh = placed_on[self.seen :]
        static, heap, entry = self.static, self.heap, self.entry
        for index in set(fresh) if len(fresh) > 1 else fresh:
            if static[index] is not None:
                new = entry(index)
                if new is not None:
                    heapq.heappush(heap, new)
        self.seen = len(placed_on)

    def best(self) -> tuple[int, int] | None:
        heap, versions = self.heap, self.versions
        while heap:
            negative, _name, index, version = heap[0]
            if versions[index] == version:
                return index, -negative
            heapq.heappop(heap)
        return None

    def explain(self) -> str:
        # Nothing changes between two failures without a placement in between.
        placements = len(self.cluster.placed_on)
        if self.explained is None or self.explained[0] != placements:
            self.explained = (placements, explain(self.request, self.work))
        return self.explained[1]


def _static_scores(request: Request, work: list[NodeInfo]) -> tuple[list[int], list[int | None]]:
    """The nodes passing the filters that never change during placement (state, isolation,
    selector, taints, label terms), and for each its score terms that never change either
    (preferred label terms, PreferNoSchedule taints); None for the nodes filtered out."""
    placement, tenant = request.placement, request.tenant
    hard = request.isolation == "hard"
    selector = placement.node_selector
    needs = [dict(t.node_labels) for t in placement.required_affinity if t.app is None]
    avoids = [dict(t.node_labels) for t in placement.required_anti_affinity if t.app is None]
    prefers = [
        (dict(p.term.node_labels), sign * WEIGHT_POINTS * p.weight)
        for sign, terms in ((1, placement.preferred_affinity), (-1, placement.preferred_anti_affinity))
        for p in terms
        if p.term.app is None
    ]
    tolerations = placement.tolerations
    candidates: list[int] = []
    static: list[int | None] = [None] * len(work)
    for index, node in enumerate(work):
        labels = node.labels
        owner = labels.get(TENANT_LABEL)
        if node.state != "ready" or (owner != tenant and (hard or owner is not None)):
            continue
        if any(labels.get(k) != v for k, v in selector):
            continue
        if any(not all(labels.get(k) == v for k, v in term.items()) for term in needs):
            continue
        if any(all(labels.get(k) == v for k, v in term.items()) for term in avoids):
            continue
        score = 0
        for taint in node.taints:
            if not any(t.tolerates(taint) for t in tolerations):
                if taint.effect != PREFER_NO_SCHEDULE:
                    break
                score -= PREFER_NO_SCHEDULE_PENALTY
        else:
            for term, points in prefers:
                if all(labels.get(k) == v for k, v in term.items()):
                    score += points
            candidates.append(index)
            static[index] = score
    return candidates, static


# --- helpers ----------------------------------------------------------------------------------


def _unfit(node: NodeInfo, request: Request, first_replica: bool) -> tuple[str, int | None] | None:
    """(reason, free amount for the resource reasons) for the first filter `node` fails.
    `first_replica`: no replica of the request's app runs anywhere yet."""
    placement, tenant = request.placement, request.tenant
    if node.state != "ready":
        return node.state.replace("-", " "), None
    owner = node.labels.get(TENANT_LABEL)
    if owner is not None and owner != tenant:
        return "dedicated to another tenant", None  # never name another tenant
    if request.isolation == "hard" and owner != tenant:
        return f"not dedicated to tenant {tenant}", None
    for key, value in placement.node_selector:
        if node.labels.get(key) != value:
            return f"not matching node selector {_pairs(placement.node_selector)}", None
    for taint in node.taints:
        if taint.effect != PREFER_NO_SCHEDULE and not _tolerated(taint, placement.tolerations):
            return f"taint {taint} not tolerated", None
    for term in placement.required_affinity:
        if not _matches(node, term, tenant) and not (first_replica and term.app == request.app):
            return f"not matching required affinity to {term}", None
    for term in placement.required_anti_affinity:
        if _matches(node, term, tenant):
            return f"matching required anti-affinity to {term}", None
    if node.cpu_free < request.cpu_millis:
        return "insufficient cpu", node.cpu_free
    if node.memory_free < request.memory_bytes:
        return "insufficient memory", node.memory_free
    return None


def _first_replica(request: Request, nodes: Sequence[NodeInfo]) -> bool:
    key = request.app_key
    return not any(node.app_replicas.get(key, 0) > 0 for node in nodes)


def _matches(node: NodeInfo, term: Term, tenant: str) -> bool:
    if term.app is not None:
        return node.app_replicas.get((tenant, term.app), 0) > 0
    return all(node.labels.get(key) == value for key, value in term.node_labels)


def _tolerated(taint: Taint, tolerations: Sequence[Toleration]) -> bool:
    return any(toleration.tolerates(taint) for toleration in tolerations)


def _permille(left: int, capacity: int) -> int:
    return left * 1000 // capacity if capacity > 0 else 0


def _take(node: NodeInfo, request: Request) -> None:
    node.cpu_free -= request.cpu_millis
    node.memory_free -= request.memory_bytes
    node.app_replicas[request.app_key] = node.app_replicas.get(request.app_key, 0) + 1


def _working_copies(nodes: Sequence[NodeInfo]) -> list[NodeInfo]:
    names = set()
    work = []
    for node in nodes:
        if node.name in names:
            raise ValueError(f"node {node.name} is given twice")
        names.add(node.name)
        copy = NodeInfo.__new__(NodeInfo)  # no __post_init__: the node was checked when made
        for name in NodeInfo.__slots__:
            setattr(copy, name, getattr(node, name))
        copy.app_replicas = dict(node.app_replicas)
        work.append(copy)
    return work


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{key}={value}" for key, value in pairs)


def _resource_text(reason: str, request: Request, free: int) -> str:
    free = max(free, 0)  # an over-committed node has nothing free, not a negative amount
    if reason == "insufficient cpu":
        needs, has = request.cpu_millis, free
        whole = needs % 1000 == 0 and has % 1000 == 0  # both in cores, or both in millicores
        needs, has = (format_cpu(needs), format_cpu(has)) if whole else (f"{needs}m", f"{has}m")
    else:
        needs, has = format_bytes(request.memory_bytes), format_bytes(free)
    return f"{reason} (needs {needs}, most free {has})"


def format_cpu(millis: int) -> str:
    """500 -> "500m", 2000 -> "2" (cores), as users write CPU amounts."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


_BINARY = (("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))
_DECIMAL = (("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3))


def format_bytes(size: int) -> str:
    """Exact in the largest unit below it or the next one (536870912 -> "512Mi", 1.5Gi ->
    "1536Mi"), or in a decimal unit (10**9 -> "1G"); otherwise in the largest unit below it,
    rounded down to a tenth (25216204800 -> "23.4Gi") rather than as an unreadable exact
    number of Ki."""
    if size < 1024:
        return str(size)
    largest = next(i for i, (_suffix, unit) in enumerate(_BINARY) if size >= unit)
    for suffix, unit in _BINARY[largest : largest + 2]:
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    suffix, unit = next((s, u) for s, u in _DECIMAL if size >= u)
    if size % unit == 0:
        return f"{size // unit}{suffix}"
    suffix, unit = _BINARY[largest]
    tenths = size * 10 // unit
    return f"{tenths // 10}.{tenths % 10}{suffix}"


# --- parsing a spec's placement ----------------------------------------------------------------


def _parse_placement(value: Mapping[str, Any] | None) -> Placement:
    value = value or {}
    allowed = {"node_selector", "affinity", "anti_affinity", "spread", "tolerations", "strategy"}
    if not isinstance(value, Mapping):
        raise ValueError("placement: expected an object")
    unknown = set(value) - allowed
    if unknown:
        raise ValueError(f"placement: unknown field(s) {', '.join(sorted(unknown))}")
    required, preferred = _parse_affinity("placement.affinity", value.get("affinity"))
    anti_required, anti_preferred = _parse_affinity("placement.anti_affinity", value.get("anti_affinity"))
    strategy = value.get("strategy") or "spread"
    if strategy not in STRATEGIES:
        raise ValueError(f"placement.strategy: expected spread or binpack, got {strategy!r}")
    spread = value.get("spread", True)
    if not isinstance(spread, bool):
        raise ValueError("placement.spread: expected true or false")
    return Placement(
        node_selector=_parse_labels("placement.node_selector", value.get("node_selector"), empty=True),
        required_affinity=required,
        preferred_affinity=preferred,
        required_anti_affinity=anti_required,
        preferred_anti_affinity=anti_preferred,
        spread=spread,
        tolerations=tuple(
            _parse_toleration(f"placement.tolerations[{i}]", item)
            for i, item in enumerate(value.get("tolerations") or [])
        ),
        strategy=strategy,
    )


def _parse_labels(where: str, value, *, empty: bool = False) -> tuple[tuple[str, str], ...]:
    if value is None and empty:
        return ()
    if not isinstance(value, Mapping) or not (value or empty):
        raise ValueError(f"{where}: expected an object of label: value")
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise ValueError(f"{where}: labels and their values are strings, got {key!r}: {val!r}")
    return tuple(sorted(value.items()))


def _parse_term(where: str, value) -> Term:
    if not isinstance(value, Mapping) or len(value) != 1 or not ({"node_labels", "app"} & set(value)):
        raise ValueError(f"{where}: expected {{node_labels: {{key: value}}}} or {{app: <app name>}}")
    if "app" in value:
        if not isinstance(value["app"], str) or not value["app"]:
            raise ValueError(f"{where}.app: expected an app name, got {value['app']!r}")
        return Term(app=value["app"])
    return Term(node_labels=_parse_labels(f"{where}.node_labels", value["node_labels"]))


def _parse_affinity(where: str, value) -> tuple[tuple[Term, ...], tuple[WeightedTerm, ...]]:
    value = value or {}
    if not isinstance(value, Mapping) or set(value) - {"required", "preferred"}:
        raise ValueError(f"{where}: expected {{required: [term], preferred: [{{weight, term}}]}}")
    required = tuple(_parse_term(f"{where}.required[{i}]", t) for i, t in enumerate(value.get("required") or []))
    preferred = []
    for i, item in enumerate(value.get("preferred") or []):
        if not isinstance(item, Mapping) or set(item) != {"weight", "term"}:
            raise ValueError(f"{where}.preferred[{i}]: expected {{weight: 1-100, term: {{...}}}}")
        weight = item["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
            raise ValueError(f"{where}.preferred[{i}].weight: expected 1 to 100, got {weight!r}")
        preferred.append(WeightedTerm(weight, _parse_term(f"{where}.preferred[{i}].term", item["term"])))
    return required, tuple(preferred)


def _parse_toleration(where: str, value) -> Toleration:
    if not isinstance(value, Mapping) or set(value) - {"key", "value", "effect", "operator"}:
        raise ValueError(f"{where}: expected {{key, operator: Equal|Exists, value, effect}}")
    # As spec.clean_placement: without a value, a toleration means "any value of this key".
    operator = value.get("operator") or ("Equal" if value.get("value") is not None else "Exists")
    if operator not in ("Equal", "Exists"):
        raise ValueError(f"{where}.operator: expected Equal or Exists, got {operator!r}")
    effect = value.get("effect") or ""
    if effect and effect not in TAINT_EFFECTS:
        raise ValueError(f"{where}.effect: expected one of {', '.join(TAINT_EFFECTS)}, got {effect!r}")
    key, val = value.get("key") or "", value.get("value") or ""
    if not isinstance(key, str) or not isinstance(val, str):
        raise ValueError(f"{where}: key and value are strings")
    if operator == "Equal" and not key:
        raise ValueError(f"{where}.key: required with operator Equal")
    return Toleration(key=key, value=val, effect=effect, operator=operator)


def evicting_taint(taints: Iterable[Mapping[str, Any]], placement: Mapping[str, Any] | None) -> Taint | None:
    """The first NoExecute taint of a node (its `taints` as stored) that a spec's placement does
    not tolerate: a replica already running there must leave, as Kubernetes' taint manager does."""
    tolerations = Placement.from_spec(placement).tolerations
    for item in taints or []:
        taint = Taint(key=str(item.get("key")), value=str(item.get("value") or ""), effect=str(item.get("effect")))
        if taint.effect == NO_EXECUTE and not _tolerated(taint, tolerations):
            return taint
    return None


# --- the ORM adapter ---------------------------------------------------------------------------


def nodes_for_scheduling() -> list[NodeInfo]:
    """Every node (the unschedulable ones too, so explanations count them), by name, with its
    free capacity and replicas per app: four queries, whatever the number of nodes. A node with
    a ready default storage pool carries the label hivemind.io/storage=ready."""
    # Imported here so that the pure scheduler (and the benchmark's placing) needs no Django set-up.
    from django.db.models import Count, Sum

    from hivemind.applications.models import Container
    from hivemind.nodes.models import Node

    live = Container.objects.filter(node__isnull=False).exclude(state=Container.State.REMOVED).order_by()
    used = {
        row["node_id"]: (int(row["cpu"] or 0), int(row["memory"] or 0))
        for row in live.values("node_id").annotate(cpu=Sum("cpu_millis"), memory=Sum("memory_bytes"))
    }
    replicas: dict[int, dict[AppKey, int]] = defaultdict(dict)
    for row in live.values("node_id", "tenant__slug", "app__name").annotate(count=Count("id")):
        replicas[row["node_id"]][(row["tenant__slug"], row["app__name"])] = row["count"]
    from storage.models import StoragePool
    from storage.mounts import STORAGE_LABEL

    with_pool = set(
        StoragePool.objects.filter(is_default=True, status=StoragePool.Status.READY).values_list("node_id", flat=True)
    )
    nodes = []
    for node in Node.objects.order_by("name"):
        cpu_used, memory_used = used.get(node.pk, (0, 0))
        labels = {str(k): str(v) for k, v in (node.labels or {}).items()}
        if node.pk in with_pool:  # where a replica's template volumes can be made (storage/mounts.py)
            labels[STORAGE_LABEL] = "ready"
        nodes.append(
            NodeInfo(
                name=node.name,
                cpu_capacity=node.cpu_millis,
                memory_capacity=node.memory_bytes,
                cpu_free=node.cpu_millis - cpu_used,
                memory_free=node.memory_bytes - memory_used,
                labels=labels,
                taints=tuple(_node_taint(node.name, taint) for taint in node.taints or []),
                state=str(node.state),
                app_replicas=replicas.get(node.pk, {}),
                id=node.pk,
            )
        )
    return nodes


def _node_taint(node: str, taint) -> Taint:
    if not isinstance(taint, Mapping) or not taint.get("key") or taint.get("effect") not in TAINT_EFFECTS:
        raise ValueError(f"node {node}: taint {taint!r} is not {{key, value, effect: {'|'.join(TAINT_EFFECTS)}}}")
    return Taint(key=str(taint["key"]), value=str(taint.get("value") or ""), effect=taint["effect"])
