"""The scheduler: every filter and its explanation, the scores, isolation, ties, the fast
path against the plain definition on random clusters, and the ORM adapter on real rows."""

from __future__ import annotations

import random

import pytest

from hivemind.applications.scheduler import (
    Decision,
    NodeInfo,
    Placement,
    Request,
    Taint,
    Term,
    Toleration,
    WeightedTerm,
    explain,
    format_bytes,
    format_cpu,
    node_score,
    nodes_for_scheduling,
    place,
    place_reference,
)
from hivemind.applications.spec import clean_placement

GiB, MiB = 2**30, 2**20


def node(name: str, cpu: int = 4000, memory: int = 8 * GiB, **fields) -> NodeInfo:
    return NodeInfo(name, cpu, memory, **fields)


def req(app: str = "web", cpu: int = 500, memory: int = 512 * MiB, *, tenant: str = "acme", **fields) -> Request:
    return Request(tenant=tenant, app=app, cpu_millis=cpu, memory_bytes=memory, **fields)


def where(requests, nodes) -> list[str | None]:
    """Place with both the fast path and the definition; they must agree."""
    decisions = place(requests, nodes)
    assert decisions == place_reference(requests, nodes)
    return [d.node for d in decisions]


def why(request: Request, nodes) -> str:
    [decision] = place([request], nodes)
    assert not decision.placed and decision.node_id is None and decision.score is None
    assert [decision] == place_reference([request], nodes)
    return decision.explanation


# --- filters and their explanations ---------------------------------------------------------


def test_the_explanation_counts_each_node_under_the_first_filter_it_fails():
    nodes = [
        node("n1", state="not-ready"),
        node("n2", state="not-ready"),
        node("n3", state="cordoned"),
        node("n4", memory=GiB, cpu_free=4000, memory_free=256 * MiB),
        node("n5", taints=(Taint("gpu", "true", "NoSchedule"),)),
    ]
    assert why(req(memory=512 * MiB), nodes) == (
        "0/5 nodes available: 2 not ready, 1 cordoned, 1 insufficient memory (needs 512Mi, most free 256Mi), "
        "1 taint gpu=true:NoSchedule not tolerated"
    )


def test_node_states():
    nodes = [node("a", state="not-ready"), node("b", state="cordoned"), node("c", state="draining"), node("d")]
    assert [n.schedulable for n in nodes] == [False, False, False, True]
    assert where([req()], nodes) == ["d"]
    assert why(req(), nodes[:3]) == "0/3 nodes available: 1 cordoned, 1 draining, 1 not ready"
    with pytest.raises(ValueError, match="state must be one of"):
        node("e", state="gone")


def test_a_node_failing_several_filters_counts_once_under_the_first():
    broken = node("a", cpu=100, state="cordoned", labels={"disk": "hdd"}, taints=(Taint("gpu", "", "NoSchedule"),))
    request = req(placement=Placement.from_spec({"node_selector": {"disk": "ssd"}}))
    assert why(request, [broken]) == "0/1 nodes available: 1 cordoned"


def test_insufficient_cpu_and_memory_name_what_is_needed_and_the_most_free():
    nodes = [
        node("a", cpu=1000, cpu_free=250),
        node("b", cpu=1000, cpu_free=400),
        node("c", cpu=2000, memory=GiB, memory_free=300 * MiB),
        node("d", cpu=2000, memory=GiB, memory_free=100 * MiB, cpu_free=100),  # cpu is checked first
        node("e", cpu=3000, cpu_free=-500),  # over-committed: nothing free, not a negative amount
    ]
    assert why(req(cpu=500, memory=512 * MiB), nodes) == (
        "0/5 nodes available: 4 insufficient cpu (needs 500m, most free 400m), "
        "1 insufficient memory (needs 512Mi, most free 300Mi)"
    )
    assert why(req(cpu=2000), [node("a", cpu=1000)]) == "0/1 nodes available: 1 insufficient cpu (needs 2, most free 1)"
    assert why(req(cpu=2000), [node("a", cpu=1500)]) == (
        "0/1 nodes available: 1 insufficient cpu (needs 2000m, most free 1500m)"
    )
    assert why(req(cpu=2000), [node("a", cpu=0)]) == "0/1 nodes available: 1 insufficient cpu (needs 2, most free 0)"


def test_a_request_that_exactly_fills_a_node_fits():
    assert where([req(cpu=4000, memory=8 * GiB)], [node("a")]) == ["a"]


def test_no_nodes_at_all():
    assert why(req(), []) == "0/0 nodes available: no nodes are registered"


def test_node_selector_needs_every_label():
    nodes = [
        node("a", labels={"disk": "ssd", "zone": "b"}),
        node("b", labels={"disk": "ssd", "zone": "a"}),
        node("c", labels={"disk": "hdd", "zone": "a"}),
    ]
    selector = Placement.from_spec({"node_selector": {"zone": "a", "disk": "ssd"}})
    assert where([req(placement=selector)] * 2, nodes) == ["b", "b"]
    assert why(req(placement=selector), [nodes[0], nodes[2]]) == (
        "0/2 nodes available: 2 not matching node selector disk=ssd,zone=a"
    )


def test_every_node_carries_its_own_name_as_a_label():
    nodes = [node("a"), node("b"), node("c")]
    pinned = Placement.from_spec({"node_selector": {"hivemind.io/node": "b"}})
    assert where([req(placement=pinned)] * 2, nodes) == ["b", "b"]
    assert nodes[0].labels == {"hivemind.io/node": "a"}


def test_required_affinity_to_node_labels():
    nodes = [node("a", labels={"zone": "a"}), node("b", labels={"zone": "b"})]
    affinity = Placement.from_spec({"affinity": {"required": [{"node_labels": {"zone": "b"}}]}})
    assert where([req(placement=affinity)], nodes) == ["b"]
    assert why(req(placement=affinity), nodes[:1]) == (
        "0/1 nodes available: 1 not matching required affinity to labels zone=b"
    )


def test_required_anti_affinity_to_node_labels():
    nodes = [node("a", labels={"zone": "a"}), node("b", labels={"zone": "b"})]
    anti = Placement.from_spec({"anti_affinity": {"required": [{"node_labels": {"zone": "a"}}]}})
    assert where([req(placement=anti)] * 2, nodes) == ["b", "b"]
    assert (
        why(req(placement=anti), nodes[:1]) == "0/1 nodes available: 1 matching required anti-affinity to labels zone=a"
    )


def test_required_affinity_to_an_app_of_the_same_tenant():
    db = {("acme", "db"): 1}
    nodes = [node("a"), node("b", app_replicas=db), node("c", app_replicas={("other", "db"): 3})]
    affinity = Placement.from_spec({"affinity": {"required": [{"app": "db"}]}})
    assert where([req(placement=affinity)] * 3, nodes) == ["b", "b", "b"]
    assert why(req(placement=affinity), [nodes[0], nodes[2]]) == (
        "0/2 nodes available: 2 not matching required affinity to app db"
    )


def test_required_affinity_to_an_app_placed_in_the_same_batch():
    nodes = [node("a"), node("b"), node("c")]
    api = Placement.from_spec({"affinity": {"required": [{"app": "db"}]}})
    assert where([req("db", cpu=100), req("api", placement=api), req("api", placement=api)], nodes) == ["a", "a", "a"]


def test_required_anti_affinity_to_its_own_app_puts_one_replica_per_node():
    anti = Placement.from_spec({"anti_affinity": {"required": [{"app": "web"}]}})
    requests = [req(placement=anti, replica=i) for i in range(3)]
    decisions = place(requests, [node("a"), node("b")])
    assert decisions == place_reference(requests, [node("a"), node("b")])
    assert [d.node for d in decisions] == ["a", "b", None]
    assert decisions[2].explanation == "0/2 nodes available: 2 matching required anti-affinity to app web"
    assert [d.request.replica for d in decisions] == [0, 1, 2]


def test_required_affinity_to_its_own_app_lets_the_first_replica_go_anywhere():
    together = Placement.from_spec({"affinity": {"required": [{"app": "web"}]}})
    nodes = [node("a"), node("b", cpu=8000, memory=16 * GiB), node("c")]
    assert where([req(placement=together)] * 4, nodes) == ["b"] * 4
    # Once a replica runs somewhere, the others must join it (or wait).
    running = [node("a"), node("b", cpu=1000, app_replicas={("acme", "web"): 1})]
    assert where([req(placement=together)] * 3, running) == ["b", "b", None]


# --- tenant isolation ---------------------------------------------------------------------------


def dedicated(name: str, tenant: str) -> NodeInfo:
    return node(name, labels={"hivemind.io/tenant": tenant})


def test_hard_isolation_uses_only_the_tenants_own_nodes():
    nodes = [node("shared"), dedicated("theirs", "globex"), dedicated("ours", "acme")]
    hard = [req(isolation="hard")] * 3
    assert where(hard, nodes) == ["ours"] * 3
    assert why(req(isolation="hard"), nodes[:2]) == (
        "0/2 nodes available: 1 dedicated to another tenant, 1 not dedicated to tenant acme"
    )


@pytest.mark.parametrize("isolation", ["soft", "network-only"])
def test_shared_isolation_uses_shared_nodes_and_its_own_but_never_another_tenants(isolation):
    nodes = [node("a-shared"), dedicated("b-theirs", "globex"), dedicated("c-ours", "acme")]
    assert where([req(isolation=isolation)] * 4, nodes) == ["a-shared", "c-ours", "a-shared", "c-ours"]
    explanation = why(req(isolation=isolation), nodes[1:2])
    assert explanation == "0/1 nodes available: 1 dedicated to another tenant"
    assert "globex" not in explanation  # a tenant never learns another's name


def test_isolation_and_resources_are_checked_when_requests_are_made():
    with pytest.raises(ValueError, match="isolation must be one of hard, soft, network-only"):
        req(isolation="none")
    with pytest.raises(ValueError, match="cpu_millis must be a whole number of at least 0"):
        req(cpu=-1)
    with pytest.raises(ValueError, match="memory_bytes"):
        req(memory=1.5)


# --- taints and tolerations ---------------------------------------------------------------------

GPU = Taint("gpu", "true", "NoSchedule")


def tolerating(*tolerations: dict) -> Placement:
    return Placement.from_spec({"tolerations": list(tolerations)})


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"key": "gpu", "operator": "Equal", "value": "true"}, True),
        ({"key": "gpu", "value": "true"}, True),  # Equal when a value is given
        ({"key": "gpu", "operator": "Equal", "value": "false"}, False),
        ({"key": "gpu", "operator": "Exists"}, True),
        ({"key": "gpu"}, True),  # Exists when no value is given, as spec.clean_placement reads it
        ({"key": "fpga", "operator": "Exists"}, False),
        ({"operator": "Exists"}, True),  # an empty key with Exists tolerates every taint
        ({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "gpu", "operator": "Exists", "effect": "PreferNoSchedule"}, False),
    ],
)
def test_tolerations(toleration, tolerated):
    request = req(placement=tolerating(toleration))
    if tolerated:
        assert where([request], [node("a", taints=(GPU,))]) == ["a"]
    else:
        assert (
            why(request, [node("a", taints=(GPU,))]) == "0/1 nodes available: 1 taint gpu=true:NoSchedule not tolerated"
        )


def test_no_execute_taints_filter_like_no_schedule_and_need_every_taint_tolerated():
    nodes = [node("a", taints=(GPU, Taint("maintenance", "", "NoExecute")))]
    assert why(req(), nodes) == "0/1 nodes available: 1 taint gpu=true:NoSchedule not tolerated"
    assert why(req(placement=tolerating({"key": "gpu"})), nodes) == (
        "0/1 nodes available: 1 taint maintenance:NoExecute not tolerated"
    )
    both = tolerating({"key": "gpu"}, {"key": "maintenance", "effect": "NoExecute"})
    assert where([req(placement=both)], nodes) == ["a"]


def test_prefer_no_schedule_taints_only_lower_the_score():
    spot = Taint("spot", "yes", "PreferNoSchedule")
    nodes = [node("a", taints=(spot,)), node("b", cpu=2000, memory=4 * GiB)]  # b is smaller, a is preferred-not
    assert where([req("web"), req("api")], nodes) == ["b", "b"]
    assert node_score(nodes[0], req()) == node_score(node("a"), req()) - 1000
    # Tolerated, it costs nothing; the bigger node wins.
    assert where([req(placement=tolerating({"key": "spot"}))], nodes) == ["a"]
    # Alone, a node with it is still used.
    assert where([req()], nodes[:1]) == ["a"]


# --- scoring ----------------------------------------------------------------------------------


def test_spread_puts_four_replicas_on_two_equal_nodes_two_and_two():
    assert where([req(replica=i) for i in range(4)], [node("a"), node("b")]) == ["a", "b", "a", "b"]


def test_spread_prefers_the_emptiest_node_after_placing():
    nodes = [node("a", cpu_free=1000), node("b", cpu_free=3000), node("c", cpu=8000, memory=16 * GiB)]
    assert where([req("x"), req("y"), req("z")], nodes) == ["c", "c", "c"]
    # Spreading an app's replicas outweighs emptiness: the second and third go elsewhere.
    assert where([req("web")] * 3, nodes) == ["c", "b", "a"]


def test_spread_false_lets_an_apps_replicas_share_the_emptiest_node():
    together = Placement.from_spec({"spread": False})
    nodes = [node("a"), node("b", cpu=16000, memory=32 * GiB)]
    assert where([req(placement=together)] * 3, nodes) == ["b", "b", "b"]
    assert where([req()] * 3, nodes) == ["b", "a", "b"]


def test_binpack_prefers_the_fullest_node_and_spread_still_separates_an_apps_replicas():
    binpack = Placement.from_spec({"strategy": "binpack"})
    nodes = [node("a"), node("b", cpu_free=1000, memory_free=2 * GiB), node("c", cpu_free=2000, memory_free=4 * GiB)]
    assert where([req("x", placement=binpack)], nodes) == ["b"]
    assert where([req("web", placement=binpack)] * 3, nodes) == ["b", "c", "a"]
    packed = Placement.from_spec({"strategy": "binpack", "spread": False})
    assert where([req("web", placement=packed)] * 4, nodes) == ["b", "b", "c", "c"]


def test_binpack_fills_one_node_before_the_next():
    packed = Placement.from_spec({"strategy": "binpack", "spread": False})
    decisions = where([req(cpu=1000, memory=GiB, placement=packed)] * 6, [node("a"), node("b")])
    assert decisions == ["a", "a", "a", "a", "b", "b"]


def test_scores_of_resources():
    empty = node("a", cpu=1000, memory=GiB)
    # After placing 500m of 1000m (500 per mille free) and 256Mi of 1Gi (750): (500 + 750) // 2.
    assert node_score(empty, req(cpu=500, memory=256 * MiB)) == 625
    assert node_score(empty, req(cpu=500, memory=256 * MiB, placement=Placement(strategy="binpack"))) == 375
    crowded = node("a", cpu=1000, memory=GiB, app_replicas={("acme", "web"): 2})
    assert node_score(crowded, req(cpu=500, memory=256 * MiB)) == 625 - 2000
    assert node_score(crowded, req(cpu=500, memory=256 * MiB, placement=Placement(spread=False))) == 625


def test_preferred_affinity_weights():
    nodes = [node("a", labels={"disk": "ssd"}), node("b", labels={"zone": "eu"}), node("c")]
    ssd = {"weight": 20, "term": {"node_labels": {"disk": "ssd"}}}
    eu = {"weight": 60, "term": {"node_labels": {"zone": "eu"}}}
    prefers = Placement.from_spec({"affinity": {"preferred": [ssd, eu]}})
    assert where([req(placement=prefers)], nodes) == ["b"]
    assert node_score(nodes[1], req(placement=prefers)) == node_score(nodes[2], req()) + 600
    assert node_score(nodes[0], req(placement=prefers)) == node_score(nodes[2], req()) + 200
    # A weight of 100 is worth one replica of the same app: the second replica ties on a and
    # c (a wins by name); for the third, c (empty) beats b (preferred, but holds one already).
    strong = Placement.from_spec({"affinity": {"preferred": [{**eu, "weight": 100}]}})
    assert where([req(placement=strong)] * 3, nodes) == ["b", "a", "c"]


def test_preferred_anti_affinity_weights():
    nodes = [node("a", labels={"zone": "eu"}), node("b", cpu=2000, memory=4 * GiB)]
    avoid_eu = Placement.from_spec(
        {"anti_affinity": {"preferred": [{"weight": 50, "term": {"node_labels": {"zone": "eu"}}}]}}
    )
    assert where([req(placement=avoid_eu)], nodes) == ["b"]
    assert where([req()], nodes) == ["a"]


def test_preferred_affinity_to_an_app_brings_replicas_near_it():
    nodes = [node("a"), node("b"), node("c", app_replicas={("acme", "cache"): 1})]
    near_cache = Placement.from_spec({"affinity": {"preferred": [{"weight": 100, "term": {"app": "cache"}}]}})
    away = Placement.from_spec({"anti_affinity": {"preferred": [{"weight": 100, "term": {"app": "cache"}}]}})
    assert where([req("api", placement=near_cache)], nodes) == ["c"]
    assert where([req("api", placement=away)] * 3, nodes) == ["a", "b", "c"]  # then the spread wins
    # Another tenant's app of that name does not count.
    assert where([req("api", tenant="globex", placement=near_cache)], nodes) == ["a"]


def test_ties_go_to_the_first_node_name_whatever_the_order_given():
    names = ["node-c", "node-a", "node-b", "node-aa"]
    for order in (names, sorted(names), sorted(names, reverse=True)):
        assert where([req()], [node(n) for n in order]) == ["node-a"]
    assert where([req(replica=i) for i in range(4)], [node(n) for n in names]) == sorted(names)


def test_placing_several_apps_sees_earlier_placements():
    nodes = [node("a", cpu=1000), node("b", cpu=1000)]
    requests = [req("web", cpu=600), req("api", cpu=600), req("job", cpu=600), req("tiny", cpu=400)]
    decisions = place(requests, nodes)
    assert decisions == place_reference(requests, nodes)
    assert [d.node for d in decisions] == ["a", "b", None, "a"]
    assert decisions[2].explanation == "0/2 nodes available: 2 insufficient cpu (needs 600m, most free 400m)"


def test_the_given_nodes_are_not_changed():
    nodes = [node("a", app_replicas={("acme", "db"): 1})]
    before = repr(nodes)
    place([req()] * 3, nodes)
    place_reference([req()] * 3, nodes)
    assert repr(nodes) == before


def test_decisions_carry_the_node_id_and_score():
    [decision] = place([req(cpu=1000, memory=GiB)], [node("a", cpu=2000, memory=2 * GiB, id=7)])
    assert decision == Decision(decision.request, "a", 7, 500, "")
    assert decision.placed


def test_a_node_name_given_twice_is_an_error():
    with pytest.raises(ValueError, match="node a is given twice"):
        place([req()], [node("a"), node("a")])


# --- placement specs ---------------------------------------------------------------------------


def test_placement_from_the_clean_spec_form_and_the_raw_form():
    raw = {
        "node_selector": {"zone": "a"},
        "affinity": {"required": [{"app": "db"}], "preferred": [{"weight": 5, "term": {"node_labels": {"d": "s"}}}]},
        "anti_affinity": {"preferred": [{"weight": 7, "term": {"app": "web"}}]},
        "spread": False,
        "tolerations": [{"key": "gpu"}, {"key": "x", "value": "1", "effect": "NoExecute"}],
        "strategy": "binpack",
    }
    expected = Placement(
        node_selector=(("zone", "a"),),
        required_affinity=(Term(app="db"),),
        preferred_affinity=(WeightedTerm(5, Term(node_labels=(("d", "s"),))),),
        preferred_anti_affinity=(WeightedTerm(7, Term(app="web")),),
        spread=False,
        tolerations=(Toleration("gpu", operator="Exists"), Toleration("x", "1", "NoExecute", "Equal")),
        strategy="binpack",
    )
    assert Placement.from_spec(raw) == expected
    assert Placement.from_spec(clean_placement(raw)) == expected
    assert Placement.from_spec(None) == Placement.from_spec(clean_placement(None)) == Placement()
    assert req(placement=raw).placement == expected  # a Request takes the dict too


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"node_selecter": {}}, "placement: unknown field"),
        ({"strategy": "random"}, "placement.strategy: expected spread or binpack"),
        ({"spread": "yes"}, "placement.spread: expected true or false"),
        ({"node_selector": {"zone": 1}}, "placement.node_selector: labels and their values are strings"),
        ({"affinity": {"required": [{"node": "a"}]}}, r"placement.affinity.required\[0\]: expected"),
        (
            {"affinity": {"preferred": [{"weight": 0, "term": {"app": "a"}}]}},
            r"preferred\[0\].weight: expected 1 to 100",
        ),
        ({"anti_affinity": {"preferred": [{"term": {"app": "a"}}]}}, r"anti_affinity.preferred\[0\]: expected"),
        ({"tolerations": [{"key": "a", "operator": "In"}]}, r"tolerations\[0\].operator: expected Equal or Exists"),
        ({"tolerations": [{"key": "a", "effect": "Never"}]}, r"tolerations\[0\].effect: expected one of"),
        ({"tolerations": [{"value": "x"}]}, r"tolerations\[0\].key: required with operator Equal"),
    ],
)
def test_bad_placements_name_the_field(spec, message):
    with pytest.raises(ValueError, match=message):
        Placement.from_spec(spec)


def test_amounts_read_as_users_write_them():
    assert [format_cpu(m) for m in (0, 250, 1000, 1500, 16000)] == ["0", "250m", "1", "1500m", "16"]
    sizes = (0, 1000, 1024, 1536, 512 * MiB, 1536 * MiB, 8 * GiB, 10**9, 25_216_204_800, 2**40 + 1)
    expected = ["0", "1000", "1Ki", "1.5Ki", "512Mi", "1536Mi", "8Gi", "1G", "23.4Gi", "1.0Ti"]
    assert [format_bytes(s) for s in sizes] == expected


# --- the fast path against the definition --------------------------------------------------------


def random_cluster(rng: random.Random, count: int) -> list[NodeInfo]:
    nodes = []
    for i in range(count):
        cpu = rng.choice([0, 1000, 2000, 4000])
        memory = rng.choice([0, 1, 2, 4]) * GiB
        labels = {
            key: rng.choice(values) for key, values in (("zone", "ab"), ("disk", ("ssd", "hdd"))) if rng.random() < 0.8
        }
        if rng.random() < 0.15:
            labels["hivemind.io/tenant"] = rng.choice(["t1", "t2"])
        taints = tuple(
            Taint(
                rng.choice(["gpu", "spot"]),
                rng.choice(["", "true"]),
                rng.choice(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
            )
            for _ in range(rng.choice([0, 0, 0, 1, 2]))
        )
        replicas = {
            (rng.choice(["t1", "t2"]), rng.choice(["web", "db", "api"])): rng.randint(1, 2)
            for _ in range(rng.choice([0, 0, 1, 2]))
        }
        nodes.append(
            NodeInfo(
                f"n{rng.randrange(1000):03d}-{i}",
                cpu,
                memory,
                cpu_free=cpu - rng.choice([0, 0, 250, 1000]),
                memory_free=memory - rng.choice([0, 0, 256 * MiB, GiB]),
                labels=labels,
                taints=taints,
                state=rng.choice(["ready"] * 8 + ["not-ready", "cordoned", "draining"]),
                app_replicas=replicas,
                id=i,
            )
        )
    rng.shuffle(nodes)
    return nodes


def random_term(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        return {"app": rng.choice(["web", "db", "api"])}
    return {"node_labels": {rng.choice(["zone", "disk"]): rng.choice(["a", "b", "ssd"])}}


def random_placement(rng: random.Random) -> Placement:
    spec: dict = {}
    if rng.random() < 0.3:
        spec["node_selector"] = {"zone": rng.choice("ab")}
    for field in ("affinity", "anti_affinity"):
        if rng.random() < 0.4:
            spec[field] = {
                "required": [random_term(rng) for _ in range(rng.choice([0, 0, 1]))],
                "preferred": [
                    {"weight": rng.randint(1, 100), "term": random_term(rng)} for _ in range(rng.randint(0, 2))
                ],
            }
    if rng.random() < 0.5:
        spec["tolerations"] = [
            rng.choice(
                [
                    {"key": "gpu"},
                    {"key": "spot", "value": "true"},
                    {"operator": "Exists", "effect": "NoSchedule"},
                    {"key": "gpu", "value": "", "operator": "Equal", "effect": "NoExecute"},
                ]
            )
        ]
    spec["spread"] = rng.random() < 0.7
    spec["strategy"] = rng.choice(["spread", "binpack"])
    return Placement.from_spec(spec)


def random_requests(rng: random.Random, count: int) -> list[Request]:
    kinds = []
    for _ in range(rng.randint(1, 5)):
        tenant = rng.choice(["t1", "t2"])
        kinds.append(
            dict(
                tenant=tenant,
                app=rng.choice(["web", "db", "api"]),
                cpu_millis=rng.choice([0, 100, 500, 1500]),
                memory_bytes=rng.choice([0, 128 * MiB, 700 * MiB]),
                isolation=rng.choice(["hard", "soft", "network-only"]),
                placement=random_placement(rng),
            )
        )
    if rng.random() < 0.5:  # runs of one kind, as apps are deployed; else interleaved
        return [Request(**kind, replica=r) for kind in kinds for r in range(count // len(kinds))]
    return [Request(**rng.choice(kinds), replica=r) for r in range(count)]


@pytest.mark.parametrize("seed", range(300))
def test_the_fast_path_decides_as_the_definition_on_random_clusters(seed):
    rng = random.Random(seed)
    nodes = random_cluster(rng, rng.randint(0, 25))
    requests = random_requests(rng, rng.randint(1, 40))
    assert place(requests, nodes) == place_reference(requests, nodes)


def test_the_fast_path_decides_as_the_definition_on_a_larger_cluster():
    rng = random.Random(2024)
    nodes = random_cluster(rng, 300)
    requests = random_requests(rng, 600)
    decisions = place(requests, nodes)
    assert decisions == place_reference(requests, nodes)
    assert 0 < sum(d.placed for d in decisions) < len(decisions)  # both outcomes were exercised


def test_explain_can_be_asked_directly():
    nodes = [node("a", state="cordoned"), node("b")]
    assert explain(req(), nodes) == "1/2 nodes available: 1 cordoned"


# --- the ORM adapter ---------------------------------------------------------------------------


def test_nodes_for_scheduling_reads_free_capacity_replicas_and_pools_in_four_queries(db, django_assert_num_queries):
    from hivemind.applications.models import App, AppRevision, Container
    from hivemind.nodes.models import Node
    from tenants.services import tenant_create

    acme = tenant_create(name="Acme", slug="acme", created_by=None)
    globex = tenant_create(name="Globex", slug="globex", created_by=None)
    big = Node.objects.create(
        name="big", cpu_millis=8000, memory_bytes=16 * GiB, status="ready",
        labels={"zone": "a", "hivemind.io/tenant": "acme"},
        taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}, {"key": "spot", "effect": "PreferNoSchedule"}],
    )  # fmt: skip
    small = Node.objects.create(name="small", cpu_millis=2000, memory_bytes=4 * GiB, status="ready", cordoned=True)
    Node.objects.create(name="down", cpu_millis=1000, memory_bytes=GiB, status="not-ready")
    Node.objects.create(name="leaving", cpu_millis=1000, memory_bytes=GiB, status="ready", draining=True)

    def app(tenant, name):
        app = App.objects.create(tenant=tenant, name=name)
        return app, AppRevision.objects.create(app=app, number=1, spec={})

    containers = []

    def container(tenant, app_revision, target, cpu, memory, state="running"):
        app, revision = app_revision
        containers.append(
            Container(
                tenant=tenant,
                app=app,
                revision=revision,
                replica=len(containers),
                node=target,
                name=f"c{len(containers)}",
                cpu_millis=cpu,
                memory_bytes=memory,
                state=state,
            )
        )

    web, database = app(acme, "web"), app(acme, "db")
    other_web = app(globex, "web")
    container(acme, web, big, 500, 512 * MiB)
    container(acme, web, big, 500, 512 * MiB, state="pending")
    container(acme, database, big, 1000, GiB, state="exited")
    container(acme, web, big, 4000, 8 * GiB, state="removed")  # gone: counts for nothing
    container(acme, web, None, 700, GiB, state="pending")  # not placed
    container(globex, other_web, small, 250, 256 * MiB, state="missing")
    Container.objects.bulk_create(containers)

    from storage.models import StoragePool

    StoragePool.objects.create(name="small-pool", provider="local", node=small, path="/srv/p", is_default=True)
    with django_assert_num_queries(4):
        nodes = nodes_for_scheduling()
    by_name = {n.name: n for n in nodes}
    assert by_name["small"].labels.get("hivemind.io/storage") == "ready"  # a ready default pool
    assert "hivemind.io/storage" not in by_name["big"].labels
    assert [n.name for n in nodes] == ["big", "down", "leaving", "small"]
    assert by_name["big"] == NodeInfo(
        name="big",
        cpu_capacity=8000,
        memory_capacity=16 * GiB,
        cpu_free=6000,
        memory_free=14 * GiB,
        labels={"zone": "a", "hivemind.io/tenant": "acme", "hivemind.io/node": "big"},
        taints=(Taint("gpu", "true", "NoSchedule"), Taint("spot", "", "PreferNoSchedule")),
        state="ready",
        app_replicas={("acme", "web"): 2, ("acme", "db"): 1},
        id=big.pk,
    )
    assert (by_name["small"].cpu_free, by_name["small"].memory_free) == (1750, 3840 * MiB)
    assert by_name["small"].app_replicas == {("globex", "web"): 1}
    assert {n.name: n.state for n in nodes} == {
        "big": "ready",
        "down": "not-ready",
        "leaving": "draining",
        "small": "cordoned",
    }
    assert by_name["down"].app_replicas == {} and by_name["down"].cpu_free == 1000

    # And what they say is what the scheduler acts on.
    gpu = Placement.from_spec({"tolerations": [{"key": "gpu"}]})
    [decision] = place([Request("acme", "web", 500, GiB, placement=gpu)], nodes)
    assert (decision.node, decision.node_id) == ("big", big.pk)
    [refused] = place([Request("globex", "api", 100, MiB, isolation="hard")], nodes)
    assert refused.explanation == (
        "0/4 nodes available: 1 cordoned, 1 dedicated to another tenant, 1 draining, 1 not ready"
    )
