"""Compiling and loading a node's nftables table with 1,000 policy rules (networking.nft).

The contract says compile + apply of 1,000 rules takes under a second: the agent rewrites the
whole table on every change of policies, services or replicas, so this is the latency of a
policy change reaching a node. The workload: 8 networks (v4 + v6 subnets), BENCH_RULES ingress
rules, each with 2 targets (v4 + v6), 2 peer CIDRs and 2 ports, a tenth of them egress rules
instead, 200 ingress- and 100 egress-isolated addresses, 50 services of 3 backends each.

Runs in a network namespace of its own (`hmnft-bench-<pid>`, removed at the end): nft needs
no interfaces for the names it matches, so the table loads as on a real node. Prints the
median of BENCH_ROUNDS (5) for: compile (pure Python; cold = address cache emptied first, as
at the agent's start; warm = the same state again, as at the next change), first apply
(empty namespace), re-apply (the table exists: delete and recreate in one transaction), and
the script's size.
Needs root and nft.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support import fmt

from networking import nft

RULES = int(os.environ.get("BENCH_RULES", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
NETWORKS = 8


def workload() -> tuple[list[nft.NetSegment], list[nft.PolicyRule], nft.Isolation, list[nft.Service]]:
    segments = [
        nft.NetSegment(n, n % 3, f"hmbr{n}", f"10.{100 + n}.0.0/16", f"fd00:{100 + n:x}::/64") for n in range(NETWORKS)
    ]
    rules = []
    for i in range(RULES):
        net = i % NETWORKS
        host = 10 + i // NETWORKS
        rules.append(
            nft.PolicyRule(
                policy_id=i // 2,  # two rules per policy, as a policy with two peers blocks would have
                direction="egress" if i % 10 == 9 else "ingress",
                targets=frozenset({f"10.{100 + net}.{host // 250}.{host % 250 + 2}", f"fd00:{100 + net:x}::{host:x}"}),
                peers=frozenset(
                    {f"10.{100 + (net + 1) % NETWORKS}.0.0/20", f"fd00:{100 + (net + 1) % NETWORKS:x}::/80"}
                ),
                ports=(("tcp", 1000 + i % 500), ("udp", 5000 + i % 100)),
            )
        )
    isolation = nft.Isolation(
        ingress=frozenset(f"10.{100 + i % NETWORKS}.0.{i // NETWORKS + 2}" for i in range(200)),
        egress=frozenset(f"fd00:{100 + i % NETWORKS:x}::{i // NETWORKS + 2:x}" for i in range(100)),
    )
    services = [
        nft.Service(
            service_id=s,
            vip4=f"10.96.{s // 250}.{s % 250 + 1}",
            vip6=f"fd00:96::{s + 1:x}",
            ports=(("tcp", 80, 8080), ("udp", 53, 5353)),
            backends4=tuple(f"10.{100 + s % NETWORKS}.1.{b + 10}" for b in range(3)),
            backends6=tuple(f"fd00:{100 + s % NETWORKS:x}::1:{b + 10:x}" for b in range(3)),
        )
        for s in range(50)
    ]
    return segments, rules, isolation, services


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("nft_policies.py needs root (it makes a network namespace)")
    netns = f"hmnft-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        segments, rules, isolation, services = workload()
        ruleset = nft.compile_ruleset(segments, rules, isolation, services)
        compile_ms, cold_ms, first_ms, again_ms = [], [], [], []
        for _ in range(ROUNDS):
            nft._net.cache_clear()  # the agent's first compile parses every address
            cold_ms.append(timed(lambda: nft.compile_ruleset(segments, rules, isolation, services)))
            compile_ms.append(timed(lambda: nft.compile_ruleset(segments, rules, isolation, services)))
            nft.remove(netns=netns)
            first_ms.append(timed(lambda: nft.apply(ruleset, netns=netns)))
            again_ms.append(timed(lambda: nft.apply(ruleset, netns=netns)))
        lines = ruleset.count("\n")
        total = statistics.median(cold_ms) + statistics.median(again_ms)
        print(f"rules={RULES} script={len(ruleset) / 1024:.0f} KiB, {lines} lines  rounds={ROUNDS}")
        print(f"compile (cold) median {statistics.median(cold_ms):7.1f} ms   [{fmt(cold_ms)}]")
        print(f"compile        median {statistics.median(compile_ms):7.1f} ms   [{fmt(compile_ms)}]")
        print(f"apply (first)  median {statistics.median(first_ms):7.1f} ms   [{fmt(first_ms)}]")
        print(f"apply (again)  median {statistics.median(again_ms):7.1f} ms   [{fmt(again_ms)}]")
        print(f"compile (cold) + re-apply: {total:.1f} ms (target < 1000 ms)")
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


if __name__ == "__main__":
    main()
