"""networking.dns against real sockets: the servers and their clients live in a namespace of the test's own.

The module makes one network namespace (`hmdns-<pid>-<random>`, removed at the end, also after
a failure) with these addresses on its `lo`, so the servers see each client's own source:

    10.77.0.2   fd00:77::2   container web-0 of tenant a
    10.77.0.3   fd00:77::3   container db-0 of tenant b
    10.77.0.9                an address that is no container (an unknown client)

Servers are started with netns=<that namespace> (so the setns path is what every test uses)
on 127.0.0.1 and ::1, port 0 (the kernel picks a free one). The upstream for names outside
the domain is another DnsServer on 127.0.0.1 answering the zone `example.`. Clients are
sockets made inside the namespace (`in_netns`) and used from the test's own thread.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from networking.dns import Directory, DnsError, DnsServer, app_records, in_netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")

NETNS = f"hmdns-{os.getpid()}-{secrets.token_hex(2)}"
A4, A6, B4, B6, STRANGER = "10.77.0.2", "fd00:77::2", "10.77.0.3", "fd00:77::3", "10.77.0.9"
TIMEOUT = 5.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    _ip("netns", "add", NETNS)
    try:
        _ip("-n", NETNS, "link", "set", "lo", "up")
        for address in (A4, B4, STRANGER):
            _ip("-n", NETNS, "address", "add", f"{address}/32", "dev", "lo")
        for address in (A6, B6):
            _ip("-n", NETNS, "address", "add", f"{address}/128", "dev", "lo", "nodad")
        yield NETNS
    finally:
        subprocess.run(["ip", "netns", "delete", NETNS], check=False, capture_output=True)


def directory(*, web_ttl: int = 5, web1: str = "10.88.0.6", big: int = 60) -> Directory:
    """Tenant a: web (no VIP), api (VIPs), v4only, big (many replicas). Tenant b: db."""
    a: dict = {}
    a |= app_records(
        tenant="a",
        app="web",
        vip4=None,
        vip6=None,
        replicas=[("web-0", A4, A6), ("web-1", web1, None)],
        ports=[("http", "tcp", 80)],
    )
    a |= app_records(
        tenant="a",
        app="api",
        vip4="10.99.0.10",
        vip6="fd00:99::10",
        replicas=[("api-0", "10.88.0.7", "fd00:88::7")],
        ports=[("grpc", "tcp", 9000)],
    )
    a |= app_records(tenant="a", app="v4only", vip4=None, vip6=None, replicas=[("v-0", "10.88.0.8", None)], ports=[])
    replicas = [(f"big-{i}", f"10.88.2.{i + 1}", None) for i in range(big)]
    a |= app_records(tenant="a", app="big", vip4=None, vip6=None, replicas=replicas, ports=[])
    b = app_records(
        tenant="b", app="db", vip4=None, vip6=None, replicas=[("db-0", B4, B6)], ports=[("pg", "tcp", 5432)]
    )
    return Directory(clients={A4: "a", A6: "a", B4: "b", B6: "b"}, records={"a": a, "b": b}, ttl=web_ttl)


@pytest.fixture(scope="module")
def upstream(netns) -> Iterator[DnsServer]:
    """The resolver the node forwards to: answers `example.` for the node (source 127.0.0.1)."""
    server = DnsServer("127.0.0.1", 0, netns=netns, domain="example.", upstreams=["127.0.0.1:9"])
    server.start()
    records = {("www.example.", "A"): ("192.0.2.80",), ("www.example.", "AAAA"): ("2001:db8::80",)}
    server.update(Directory(clients={"127.0.0.1": "node", "::1": "node"}, records={"node": records}))
    yield server
    server.stop()


def _start(address: str, netns: str, upstream: DnsServer, **options) -> DnsServer:
    server = DnsServer(address, 0, netns=netns, upstreams=[f"127.0.0.1:{upstream.port}"], **options)
    server.start()
    server.update(directory())
    return server


@pytest.fixture(scope="module")
def server(netns, upstream) -> Iterator[DnsServer]:
    server = _start("127.0.0.1", netns, upstream)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server6(netns, upstream) -> Iterator[DnsServer]:
    server = _start("::1", netns, upstream)
    yield server
    server.stop()


@pytest.fixture
def own_server(netns, upstream) -> Iterator[DnsServer]:
    """A server for one test (its stats and directory are the test's alone)."""
    server = _start("127.0.0.1", netns, upstream)
    yield server
    server.stop()


def client(source: str, *, tcp: bool = False) -> socket.socket:
    """A socket inside the test namespace, bound to `source`: the server sees that container."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET

    def make() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.settimeout(TIMEOUT)
        return sock

    return in_netns(NETNS, make)


def exchange(server: DnsServer, source: str, query: DNSRecord, *, tcp: bool = False) -> bytes:
    """The raw answer to `query` sent from `source` over UDP or TCP."""
    data = query.pack()
    with client(source, tcp=tcp) as sock:
        if tcp:
            sock.connect((server.address, server.port))
            sock.sendall(struct.pack("!H", len(data)) + data)
            size = struct.unpack("!H", _read(sock, 2))[0]
            wire = _read(sock, size)
        else:
            sock.sendto(data, (server.address, server.port))
            wire = sock.recv(65535)
    assert wire[:2] == data[:2], "the answer carries the query's ID"
    return wire


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def ask(server: DnsServer, source: str, name: str, qtype: str = "A", *, tcp: bool = False, edns: int = 0) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    if edns:
        query.add_ar(EDNS0(udp_len=edns))
    return DNSRecord.parse(exchange(server, source, query, tcp=tcp))


def values(reply: DNSRecord, qtype: str) -> set[str]:
    return {str(rr.rdata) for rr in reply.rr if rr.rtype == getattr(QTYPE, qtype)}


def is_nodata(reply: DNSRecord) -> bool:
    soa = [rr for rr in reply.auth if rr.rtype == QTYPE.SOA]
    return reply.header.rcode == RCODE.NOERROR and not reply.rr and len(soa) == 1 and reply.header.aa == 1


# --- answers inside the tenant --------------------------------------------------------------------


def test_app_without_vip_resolves_to_its_replicas(server):
    reply = ask(server, A4, "web.a.hivemind.")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1
    assert values(reply, "A") == {A4, "10.88.0.6"}
    assert all(rr.ttl == 5 for rr in reply.rr)
    assert values(ask(server, A4, "web.a.hivemind.", "AAAA"), "AAAA") == {A6}


def test_app_with_vip_resolves_to_the_vip_only(server):
    assert values(ask(server, A4, "api.a.hivemind."), "A") == {"10.99.0.10"}
    assert values(ask(server, A4, "api.a.hivemind.", "AAAA"), "AAAA") == {"fd00:99::10"}


def test_each_replica_has_a_name(server):
    assert values(ask(server, A4, "web-1.web.a.hivemind."), "A") == {"10.88.0.6"}
    assert values(ask(server, A4, "web-0.web.a.hivemind.", "AAAA"), "AAAA") == {A6}


def test_names_are_case_insensitive_and_the_answer_echoes_the_query(server):
    reply = ask(server, A4, "WeB.A.HiveMind.")
    assert values(reply, "A") == {A4, "10.88.0.6"}
    assert {str(rr.rname) for rr in reply.rr} == {"WeB.A.HiveMind."}


def test_srv_for_named_ports_with_the_targets_addresses(server):
    reply = ask(server, A4, "_http._tcp.web.a.hivemind.", "SRV")
    assert sorted(str(rr.rdata) for rr in reply.rr) == [
        "0 1 80 web-0.web.a.hivemind.",
        "0 1 80 web-1.web.a.hivemind.",
    ]
    assert {(str(rr.rname), str(rr.rdata)) for rr in reply.ar} == {
        ("web-0.web.a.hivemind.", A4),
        ("web-0.web.a.hivemind.", A6),
        ("web-1.web.a.hivemind.", "10.88.0.6"),
    }
    vip = ask(server, A4, "_grpc._tcp.api.a.hivemind.", "SRV")
    assert [str(rr.rdata) for rr in vip.rr] == ["0 1 9000 api.a.hivemind."]


def test_ptr_v4_and_v6_within_the_tenant(server, server6):
    reply = ask(server, A4, "2.0.77.10.in-addr.arpa.", "PTR")
    assert values(reply, "PTR") == {"web-0.web.a.hivemind."}
    v6_name = socket.inet_pton(socket.AF_INET6, A6).hex()[::-1]
    reply6 = ask(server6, A6, ".".join(v6_name) + ".ip6.arpa.", "PTR")
    assert values(reply6, "PTR") == {"web-0.web.a.hivemind."}
    assert values(ask(server, A4, "10.0.99.10.in-addr.arpa.", "PTR"), "PTR") == {"api.a.hivemind."}


def test_a_name_without_the_asked_type_is_nodata(server):
    assert is_nodata(ask(server, A4, "v4only.a.hivemind.", "AAAA"))
    assert is_nodata(ask(server, A4, "web-1.web.a.hivemind.", "AAAA"))
    assert is_nodata(ask(server, A4, "a.hivemind."))  # an empty non-terminal exists (RFC 8020)
    apex = ask(server, A4, "hivemind.", "SOA")
    assert [str(rr.rname) for rr in apex.rr if rr.rtype == QTYPE.SOA] == ["hivemind."]


def test_large_answers_truncate_over_udp_and_come_whole_over_tcp(server):
    small = ask(server, A4, "big.a.hivemind.")
    assert small.header.tc == 1 and not small.rr
    assert len(values(ask(server, A4, "big.a.hivemind.", tcp=True), "A")) == 60
    assert len(values(ask(server, A4, "big.a.hivemind.", edns=4096), "A")) == 60


def test_v6_clients_on_a_v6_server(server6):
    assert values(ask(server6, A6, "web.a.hivemind."), "A") == {A4, "10.88.0.6"}
    assert ask(server6, B6, "web.a.hivemind.").header.rcode == RCODE.NXDOMAIN


# --- tenants apart ------------------------------------------------------------------------------


def _same_but_name(server: DnsServer, source: str, existing: str, absent: str, qtype: str = "A") -> None:
    """Asking for another tenant's name answers the very bytes of a name nobody has."""
    assert len(existing) == len(absent)
    first = exchange(server, source, DNSRecord.question(existing, qtype))
    second = exchange(server, source, DNSRecord.question(absent, qtype))
    assert DNSRecord.parse(first).header.rcode == RCODE.NXDOMAIN
    assert first[2:].replace(_wire_name(existing), _wire_name(absent)) == second[2:]


def _wire_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"


def test_another_tenants_names_are_nxdomain_like_names_that_do_not_exist(server, server6):
    _same_but_name(server, A4, "db.b.hivemind.", "dc.b.hivemind.")
    _same_but_name(server, A4, "db-0.db.b.hivemind.", "db-9.db.b.hivemind.")
    _same_but_name(server, A4, "_pg._tcp.db.b.hivemind.", "_pq._tcp.db.b.hivemind.", "SRV")
    _same_but_name(server, A4, "b.hivemind.", "z.hivemind.")
    _same_but_name(server, B4, "web.a.hivemind.", "wex.a.hivemind.")
    _same_but_name(server, A4, "3.0.77.10.in-addr.arpa.", "4.0.77.10.in-addr.arpa.", "PTR")
    _same_but_name(server6, A6, "db.b.hivemind.", "dc.b.hivemind.", "AAAA")
    nxdomain = ask(server, A4, "db.b.hivemind.")
    soa = [rr for rr in nxdomain.auth if rr.rtype == QTYPE.SOA]
    assert nxdomain.header.aa == 1 and len(soa) == 1 and soa[0].ttl == 5 and soa[0].rdata.times[-1] == 5


def test_an_unknown_client_gets_nxdomain_here_and_no_recursion(server):
    before = server.stats.forwarded
    _same_but_name(server, STRANGER, "web.a.hivemind.", "wex.a.hivemind.")
    refused = ask(server, STRANGER, "www.example.")
    assert refused.header.rcode == RCODE.REFUSED and refused.header.ra == 0 and not refused.rr
    assert server.stats.forwarded == before


# --- forwarding -----------------------------------------------------------------------------------


def test_names_outside_the_domain_go_to_the_upstream(server):
    reply = ask(server, A4, "www.example.")
    assert values(reply, "A") == {"192.0.2.80"} and reply.header.ra == 1
    assert values(ask(server, B4, "www.example.", "AAAA", tcp=True), "AAAA") == {"2001:db8::80"}
    missing = ask(server, A4, "nope.example.")
    assert missing.header.rcode == RCODE.NXDOMAIN
    assert [str(rr.rname) for rr in missing.auth] == ["example."]  # the upstream's own SOA, passed through


def test_a_dead_upstream_is_servfail(netns):
    closed = DnsServer("127.0.0.1", 0, netns=netns, upstreams=["127.0.0.1:9"], forward_timeout=3.0)
    with closed:
        closed.update(directory())
        started = time.monotonic()
        assert ask(closed, A4, "www.example.").header.rcode == RCODE.SERVFAIL
        assert ask(closed, A4, "www.example.", tcp=True).header.rcode == RCODE.SERVFAIL
        assert time.monotonic() - started < 1.5  # a closed port refuses at once: no waiting for the timeout


def test_a_silent_upstream_times_out_without_holding_up_local_answers(netns):
    silent = client("127.0.0.1")  # bound, never read: every query to it goes unanswered
    port = silent.getsockname()[1]
    server = DnsServer("127.0.0.1", 0, netns=netns, upstreams=[f"127.0.0.1:{port}"], forward_timeout=2.0)
    with silent, server:
        server.update(directory())
        waiting = client(A4)
        waiting.sendto(DNSRecord.question("www.example.").pack(), (server.address, server.port))
        started = time.monotonic()
        assert values(ask(server, A4, "web-1.web.a.hivemind."), "A") == {"10.88.0.6"}
        assert time.monotonic() - started < 1.5  # well before the upstream's timeout
        with waiting:
            reply = DNSRecord.parse(waiting.recv(65535))
        assert reply.header.rcode == RCODE.SERVFAIL
        assert 1.5 < time.monotonic() - started < 5
        assert server.stats.servfail == 1 and server.stats.forwarded == 1


# --- life cycle -----------------------------------------------------------------------------------


def test_update_swaps_the_answers_at_once(own_server):
    assert values(ask(own_server, A4, "web-1.web.a.hivemind."), "A") == {"10.88.0.6"}
    own_server.update(directory(web1="10.88.0.60"))
    assert values(ask(own_server, A4, "web-1.web.a.hivemind."), "A") == {"10.88.0.60"}
    own_server.update(Directory(clients={A4: "a"}, records={}))
    assert ask(own_server, A4, "web-1.web.a.hivemind.").header.rcode == RCODE.NXDOMAIN
    with pytest.raises(ValueError, match="not an IPv4 address"):
        own_server.update(Directory(clients={A4: "a"}, records={"a": {("x.a.hivemind.", "A"): ("10.0.0.300",)}}))
    assert ask(own_server, A4, "web-1.web.a.hivemind.").header.rcode == RCODE.NXDOMAIN  # the last good one stays


def test_stats_count_queries_by_outcome_and_type(own_server):
    for _ in range(3):
        ask(own_server, A4, "web.a.hivemind.")  # the second and third come from the cache
    ask(own_server, A4, "web.a.hivemind.", "AAAA")
    ask(own_server, A4, "_http._tcp.web.a.hivemind.", "SRV")
    ask(own_server, A4, "db.b.hivemind.")
    ask(own_server, A4, "www.example.")
    ask(own_server, STRANGER, "www.example.")
    stats = own_server.stats
    assert (stats.queries, stats.nxdomain, stats.forwarded, stats.refused, stats.cache_hits) == (8, 1, 1, 1, 2)
    assert stats.by_type == {"A": 6, "AAAA": 1, "SRV": 1}


def test_stop_frees_the_port(netns, upstream):
    server = _start("127.0.0.1", netns, upstream)
    port = server.port
    with pytest.raises(DnsError, match="already in use"):
        DnsServer("127.0.0.1", port, netns=netns).start()
    server.stop()

    def bind_both() -> None:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", port))

    in_netns(netns, bind_both)
    again = DnsServer("127.0.0.1", port, netns=netns, upstreams=["127.0.0.1:9"])
    with again:
        again.update(directory())
        assert values(ask(again, A4, "web-1.web.a.hivemind."), "A") == {"10.88.0.6"}


def test_start_says_why_it_cannot(netns):
    with pytest.raises(DnsError, match="not an address of this node"):
        DnsServer("10.77.0.50", 0, netns=netns).start()
    with pytest.raises(DnsError, match="no network namespace"):
        DnsServer("127.0.0.1", 0, netns=f"{NETNS}-missing").start()
    with pytest.raises(ValueError, match="wildcard"):
        DnsServer("0.0.0.0")  # noqa: S104 - the point: it is refused
    with pytest.raises(ValueError, match="wildcard"):
        DnsServer("::")


# --- records --------------------------------------------------------------------------------------


def test_app_records_shape():
    records = app_records(
        tenant="T1",
        app="api",
        vip4="10.99.0.10",
        vip6=None,
        replicas=[("api-0", "10.88.0.7", "fd00:88::7")],
        ports=[("grpc", "TCP", 9000)],
    )
    assert records == {
        ("api-0.api.t1.hivemind.", "A"): ("10.88.0.7",),
        ("7.0.88.10.in-addr.arpa.", "PTR"): ("api-0.api.t1.hivemind.",),
        ("api-0.api.t1.hivemind.", "AAAA"): ("fd00:88::7",),
        (socket.inet_pton(socket.AF_INET6, "fd00:88::7").hex()[::-1].replace("", ".")[1:] + "ip6.arpa.", "PTR"): (
            "api-0.api.t1.hivemind.",
        ),
        ("api.t1.hivemind.", "A"): ("10.99.0.10",),
        ("10.0.99.10.in-addr.arpa.", "PTR"): ("api.t1.hivemind.",),
        ("_grpc._tcp.api.t1.hivemind.", "SRV"): ((0, 1, 9000, "api.t1.hivemind."),),
    }
    with pytest.raises(ValueError, match="not a DNS label"):
        app_records(tenant="a", app="a.b", vip4=None, vip6=None, replicas=[], ports=[])
    with pytest.raises(ValueError, match="tcp or udp"):
        app_records(tenant="a", app="x", vip4=None, vip6=None, replicas=[], ports=[("p", "sctp", 1)])
