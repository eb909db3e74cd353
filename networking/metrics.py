"""Network figures on /metrics, read from what the agents last reported (NodeTraffic) and from
the database at each scrape. Labels are ids and names Hivemind chose or validated as DNS
labels (tenant slugs, network, policy and app names, node names), never free text, so the
series are bounded by the objects that exist.

- hivemind_network_bytes_total / hivemind_network_packets_total {tenant, network, node, direction}:
  traffic of a tenant network through a node (direction in: to its members; out: from them).
- hivemind_network_dropped_packets_total {tenant, network, node}: packets isolation or a
  policy dropped on their way into or out of the network.
- hivemind_network_policy_packets_total {tenant, policy, node}: packets a policy let through.
- hivemind_dns_queries_total / hivemind_dns_nxdomain_total {node}.
- hivemind_service_backends {tenant, app}: healthy replicas behind an app's virtual address.

nftables counters start again from zero when a node's table is replaced (a change of
policies or backends): they are counters with resets, which rate() and increase() handle.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_NET = re.compile(r"^net_(\d+)_(in|out)$")
_DROP = re.compile(r"^drop_net_(\d+)$")
_POLICY = re.compile(r"^policy_(\d+)$")


class NetworkCollector:
    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        from hivemind.applications.models import Container
        from networking.discovery import serving
        from networking.models import Address, Network, NetworkPolicy, NodeTraffic, ServiceAddress

        bytes_ = CounterMetricFamily(
            "hivemind_network_bytes", "Bytes of a tenant network through a node.",
            labels=["tenant", "network", "node", "direction"],
        )  # fmt: skip
        packets = CounterMetricFamily(
            "hivemind_network_packets", "Packets of a tenant network through a node.",
            labels=["tenant", "network", "node", "direction"],
        )  # fmt: skip
        dropped = CounterMetricFamily(
            "hivemind_network_dropped_packets", "Packets isolation or a policy dropped, per network and node.",
            labels=["tenant", "network", "node"],
        )  # fmt: skip
        allowed = CounterMetricFamily(
            "hivemind_network_policy_packets", "Packets a network policy let through, per node.",
            labels=["tenant", "policy", "node"],
        )  # fmt: skip
        queries = CounterMetricFamily("hivemind_dns_queries", "Queries a node's DNS server answered.", labels=["node"])
        nxdomain = CounterMetricFamily(
            "hivemind_dns_nxdomain", "NXDOMAIN answers of a node's DNS server.", labels=["node"]
        )
        backends = GaugeMetricFamily(
            "hivemind_service_backends", "Healthy replicas behind an app's virtual address.", labels=["tenant", "app"]
        )
        networks = {
            pk: (tenant, name) for pk, tenant, name in Network.objects.values_list("pk", "tenant__slug", "name")
        }
        policies = {
            pk: (tenant, name) for pk, tenant, name in NetworkPolicy.objects.values_list("pk", "tenant__slug", "name")
        }
        for report in NodeTraffic.objects.select_related("node"):
            node = report.node.name
            for name, value in (report.counters or {}).items():
                count, size = (int(v) for v in value)
                if match := _NET.match(name):
                    known = networks.get(int(match.group(1)))
                    if known:
                        labels = [*known, node, match.group(2)]
                        bytes_.add_metric(labels, size)
                        packets.add_metric(labels, count)
                elif match := _DROP.match(name):
                    known = networks.get(int(match.group(1)))
                    if known:
                        dropped.add_metric([*known, node], count)
                elif match := _POLICY.match(name):
                    known = policies.get(int(match.group(1)))
                    if known:
                        allowed.add_metric([*known, node], count)
            if report.dns:
                queries.add_metric([node], int(report.dns.get("queries", 0)))
                nxdomain.add_metric([node], int(report.dns.get("nxdomain", 0)))
        serving_now: dict[int, int] = {}
        rows = Address.objects.filter(container__state=Container.State.RUNNING).values_list(
            "container__app_id", "container__health"
        )
        for app_id, health in rows:
            if serving(health):
                serving_now[app_id] = serving_now.get(app_id, 0) + 1
        for app_id, tenant, app in ServiceAddress.objects.values_list("app_id", "app__tenant__slug", "app__name"):
            backends.add_metric([tenant, app], serving_now.get(app_id, 0))
        return [bytes_, packets, dropped, allowed, queries, nxdomain, backends]
