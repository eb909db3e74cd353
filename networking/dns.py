"""The node's service-discovery DNS server: `<app>.<tenant>.hivemind.` for the containers of a tenant.

Every node runs one `DnsServer` inside its agent process, bound to an explicit node address
(never the wildcard: the node's own resolver or Docker may hold port 53 elsewhere) over UDP
and TCP. Containers are started with `--dns ADDR --dns-search <tenant>.hivemind.`, so Docker's
embedded resolver (127.0.0.11) forwards to this server from the container's own address: the
source address of a query tells which tenant asks (`Directory.clients`).

What a client is told depends only on its own tenant's view (`Directory.records[tenant]`: the
names that tenant may see, normally its own apps' built with `app_records`):

- A name under the domain, or under a private reverse zone (RFC 6303: 10/8, 172.16/12,
  192.168/16, 100.64/10, 169.254/16, fc00::/7, fe80::/10), is answered from the asking
  tenant's records alone. A name the tenant has no record for is NXDOMAIN, authoritative,
  with one constant SOA in authority (serial never changes, so that not even an update
  elsewhere shows); whether the name exists in another tenant changes nothing, byte for byte.
  Private reverse zones are answered here and never forwarded, so a PTR query neither leaks
  container addresses upstream nor tells another tenant's address from a free one.
- A name that exists with no record of the asked type is NOERROR with an empty answer and the
  SOA (NODATA, RFC 2308). Negative answers are cached by clients for `ttl` seconds at most.
- Any other name is forwarded to the upstreams (default: the non-loopback nameservers of
  /etc/resolv.conf) with a short timeout; their answer is returned as is, SERVFAIL when none
  answers. Only known containers may recurse: a client address that is not in
  `Directory.clients` gets NXDOMAIN under our zones (as any unknown name) and REFUSED for
  everything else, so the server is never an open resolver on a node address.

Speed: queries are answered by one UDP thread; a local answer is packed once and kept per
(tenant, query bytes after the ID), and the whole cache goes away with the directory it was
computed from, so `update()` changes answers at once. `update()` compiles only the tenants
whose records changed (10,000 apps from scratch: about 0.5 s, holding the interpreter lock).
Forwarding runs in a small pool so a slow upstream never delays local answers. dnslib only
parses and packs. `bench/dns.py` measures it.

With `netns`, the listening sockets are created inside /run/netns/<netns> by a short-lived
thread that enters it (setns acts on the calling thread only), and the forwarding threads
live there too; the process and the serving threads stay where they are.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import functools
import gc
import ipaddress
import logging
import os
import re
import secrets
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

from dnslib import AAAA, EDNS0, PTR, QTYPE, RR, SOA, SRV, A, DNSHeader, DNSLabel, DNSRecord

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DOMAIN = "hivemind."
FORWARD_TIMEOUT = 1.0  # seconds per upstream: clients (glibc, Docker's resolver) give up after 5
MAX_FORWARDS = 64  # queries waiting on upstreams at once; more are SERVFAIL at once
TCP_IDLE = 5.0  # seconds an idle TCP connection is kept (RFC 7766 suggests a few)
MAX_TCP = 64  # TCP connections served at once; more are closed at once
CACHE_LIMIT = 20_000  # packed answers kept per directory; the cache starts over beyond
EDNS_PAYLOAD = 1232  # the UDP size we advertise (DNS flag day 2020)
MAX_UDP = 4096  # the largest UDP answer we send whatever a client advertises
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_A, _SOA, _PTR, _AAAA, _SRV, _OPT, _ANY = 1, 6, 12, 28, 33, 41, 255  # QTYPE codes (dnslib's lookups are slow)
_FORMERR, _SERVFAIL, _NXDOMAIN, _NOTIMP, _REFUSED = 1, 2, 3, 4, 5  # RCODEs
TYPES = {"A": _A, "AAAA": _AAAA, "SRV": _SRV, "PTR": _PTR}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NETNS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class DnsError(RuntimeError):
    """The server cannot run as asked (address not on this node, port taken, no such namespace)."""


@dataclass(frozen=True)
class Directory:
    """Everything the server answers, replaced as a whole (atomic swap of one reference) by the agent.

    clients: container address (v4 or v6 text) -> tenant slug: who is asking.
    records: tenant slug -> {(fqdn, "A"|"AAAA"|"SRV"|"PTR"): (values...)}: what that tenant sees.
      A/AAAA values are address text, PTR values fqdns, SRV values (priority, weight, port, target).
    """

    clients: Mapping[str, str] = field(default_factory=dict)
    records: Mapping[str, Mapping[tuple[str, str], tuple]] = field(default_factory=dict)
    ttl: int = 5


@dataclass(frozen=True)
class DnsStats:
    """Counters since start, for metrics. `forwarded` counts queries sent upstream, whatever came back."""

    queries: int
    nxdomain: int
    servfail: int
    refused: int
    forwarded: int
    cache_hits: int
    by_type: Mapping[str, int]


# --- names -------------------------------------------------------------------------------------


def _fqdn(name: str) -> str:
    """Lower case with the trailing dot: the one spelling every lookup uses."""
    name = name.strip().lower()
    return name if name.endswith(".") else f"{name}."


@functools.lru_cache(maxsize=65536)
def _label(text: str, what: str) -> str:
    label = text.strip().lower()
    if not _LABEL.fullmatch(label):
        raise ValueError(f"{what} {text!r} is not a DNS label (letters, digits, '-', '_'; at most 63)")
    return label


@functools.lru_cache(maxsize=65536)
def _reverse(address: str) -> str:
    """The PTR name of an address; cached: the directory is rebuilt from the same addresses
    again and again, and `reverse_pointer` of an IPv6 address costs about 10 µs."""
    return ipaddress.ip_address(address).reverse_pointer + "."


def _private_reverse_zones() -> frozenset[str]:
    """RFC 6303's locally served zones for the ranges containers and VIPs come from."""
    zones = {"10.in-addr.arpa.", "168.192.in-addr.arpa.", "254.169.in-addr.arpa."}
    zones |= {f"{octet}.172.in-addr.arpa." for octet in range(16, 32)}
    zones |= {f"{octet}.100.in-addr.arpa." for octet in range(64, 128)}
    zones |= {"c.f.ip6.arpa.", "d.f.ip6.arpa.", "8.e.f.ip6.arpa.", "9.e.f.ip6.arpa.", "a.e.f.ip6.arpa."}
    zones |= {"b.e.f.ip6.arpa."}
    return frozenset(zones)


PRIVATE_REVERSE_ZONES = _private_reverse_zones()
_REVERSE_ROOTS = ("in-addr.arpa.", "ip6.arpa.")


def _suffixes(name: str) -> Iterator[str]:
    """`a.b.c.` then `b.c.` then `c.`: the name and its ancestors, longest first."""
    while name and name != ".":
        yield name
        name = name.split(".", 1)[1] or "."


def app_records(
    *,
    tenant: str,
    app: str,
    vip4: str | None,
    vip6: str | None,
    replicas: Iterable[tuple[str, str | None, str | None]],
    ports: Iterable[tuple[str, str, int]],
    domain: str = DEFAULT_DOMAIN,
) -> dict[tuple[str, str], tuple]:
    """One app's records, to be merged into its tenant's `Directory.records` view.

    `<app>.<tenant>.<domain>` holds the VIPs when the app has one (a family without a VIP then
    has no record, so that no client bypasses the load balancer), else every replica's
    addresses; `<replica>.<app>...` a replica's own; `_<port>._<proto>.<app>...` one SRV to the
    app (VIP) or one per replica; PTR names of replica addresses (and VIPs) point back to them.
    """
    base = f"{_label(app, 'app name')}.{_label(tenant, 'tenant slug')}.{_fqdn(domain)}"
    records: dict[tuple[str, str], tuple] = {}

    def add(name: str, rtype: str, value: object) -> None:
        values = records.get((name, rtype), ())
        if value not in values:
            records[(name, rtype)] = (*values, value)

    has_vip = bool(vip4 or vip6)
    targets: list[str] = []
    for replica, addr4, addr6 in replicas:
        name = f"{_label(replica, 'replica name')}.{base}"
        for rtype, address in (("A", addr4), ("AAAA", addr6)):
            if address:
                add(name, rtype, address)
                add(_reverse(address), "PTR", name)
                if not has_vip:
                    add(base, rtype, address)
        if (addr4 or addr6) and name not in targets:
            targets.append(name)
    for rtype, address in (("A", vip4), ("AAAA", vip6)):
        if address:
            add(base, rtype, address)
            add(_reverse(address), "PTR", base)
    for port_name, proto, port in ports:
        if proto.lower() not in ("tcp", "udp"):
            raise ValueError(f"port {port_name!r}: protocol must be tcp or udp, got {proto!r}")
        srv = f"_{_label(port_name, 'port name')}._{proto.lower()}.{base}"
        for target in [base] if has_vip else targets:
            add(srv, "SRV", (0, 1, int(port), target))
    return records


# --- the compiled directory ---------------------------------------------------------------------


class _View(NamedTuple):
    """One tenant's records, ready for lookups."""

    names: dict[str, dict[int, tuple]]  # fqdn -> {qtype: values}
    backwards: list[str]  # every name spelled backwards, sorted: finds empty non-terminals by bisection
    source: dict  # a snapshot of the records it was compiled from: an unchanged tenant is not compiled again

    def has_below(self, name: str) -> bool:
        """Does some name of the view end in `.name` (an empty non-terminal, RFC 8020: not NXDOMAIN)?"""
        key = f".{name}"[::-1]
        i = bisect.bisect_left(self.backwards, key)
        return i < len(self.backwards) and self.backwards[i].startswith(key)


_EMPTY_VIEW = _View({}, [], {})


class _Cached(NamedTuple):
    wire: bytes  # the answer without its two ID bytes
    qtype: str
    rcode: int


class _State:
    """A directory compiled for lookups, with the answers packed from it (they die together)."""

    def __init__(self, directory: Directory, domain: str, previous: _State | None = None) -> None:
        if not 0 <= directory.ttl <= 86400:
            raise ValueError(f"ttl must be 0..86400 seconds, got {directory.ttl}")
        self.ttl = directory.ttl
        self.domain = domain
        self.under = f".{domain}"
        self.clients = {_address_key(address): tenant for address, tenant in directory.clients.items()}
        before = previous.views if previous is not None and previous.domain == domain else {}
        self.views = {tenant: self._view(records, before.get(tenant)) for tenant, records in directory.records.items()}
        self.cache: dict[tuple[str | None, bytes], _Cached] = {}

    def zone_of(self, name: str) -> str | None:
        """The zone we answer for that holds `name`, or None when the name is someone else's."""
        if name.endswith(self.under) or name == self.domain:
            return self.domain
        if name.endswith(_REVERSE_ROOTS):
            for suffix in _suffixes(name):
                if suffix in PRIVATE_REVERSE_ZONES:
                    return suffix
        return None

    def apex(self, name: str) -> str:
        """The SOA owner for a name of a view: its zone, or the reverse root for a public address."""
        return self.zone_of(name) or next((root for root in _REVERSE_ROOTS if name.endswith(root)), self.domain)

    def _view(self, records: Mapping[tuple[str, str], tuple], before: _View | None) -> _View:
        source = dict(records)
        if before is not None and before.source == source:
            return before
        names: dict[str, dict[int, tuple]] = {}
        for (raw_name, raw_type), values in source.items():
            name = _fqdn(raw_name)
            if not (name.endswith(self.under) or name == self.domain or name.endswith(_REVERSE_ROOTS)):
                raise ValueError(f"{raw_name!r} is neither under {self.domain} nor a reverse name")
            rtype = TYPES.get(raw_type.upper())
            if rtype is None:
                raise ValueError(f"{raw_name!r}: record type {raw_type!r} is not one of {', '.join(TYPES)}")
            rrsets = names.setdefault(name, {})
            rrsets[rtype] = rrsets.get(rtype, ()) + tuple(_value(rtype, v) for v in _values(rtype, values))
        return _View(names, sorted(name[::-1] for name in names), source)

    def view(self, tenant: str | None) -> _View:
        return self.views.get(tenant, _EMPTY_VIEW) if tenant is not None else _EMPTY_VIEW

    def remember(self, key: tuple[str | None, bytes], cached: _Cached) -> None:
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()  # a client varying its queries must not grow memory without end
        self.cache[key] = cached


def _address_key(address: str) -> str:
    """Addresses as the kernel reports a peer (inet_ntop: compressed v6, no zone), whatever the text given."""
    text = address.strip().split("%", 1)[0]
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except OSError:
        raise ValueError(f"{address!r} is not an IP address") from None


def _values(rtype: int, values: object) -> tuple:
    """A bare value where a tuple of them was meant (an address, one SRV tuple) counts as one."""
    if isinstance(values, str) or (
        rtype == _SRV and isinstance(values, tuple) and values and isinstance(values[0], int)
    ):
        return (values,)
    return tuple(values)  # type: ignore[arg-type]


def _value(rtype: int, value: object) -> object:
    """One record value checked and normalized now, so that a bad one fails the update, not a query."""
    if rtype in (_A, _AAAA):
        family = socket.AF_INET if rtype == _A else socket.AF_INET6
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, str(value)))
        except OSError:
            raise ValueError(f"{value!r} is not an IPv{4 if rtype == _A else 6} address") from None
    if rtype == _PTR:
        return _fqdn(str(value))
    priority, weight, port, target = value  # type: ignore[misc]
    for number in (priority, weight, port):
        if not 0 <= int(number) <= 65535:
            raise ValueError(f"SRV {value!r}: priority, weight and port are 0..65535")
    return (int(priority), int(weight), int(port), _fqdn(str(target)))


def _rdata(rtype: int, value: object) -> object:
    if rtype == _A:
        return A(value)
    if rtype == _AAAA:
        return AAAA(value)
    if rtype == _PTR:
        return PTR(value)
    priority, weight, port, target = value  # type: ignore[misc]
    return SRV(priority=priority, weight=weight, port=port, target=target)


# --- wire helpers --------------------------------------------------------------------------------


def _question(data: bytes) -> bytes:
    """The question section's bytes of a one-question message (b"" when there is none to read)."""
    if len(data) < 12 or data[4:6] != b"\x00\x01":
        return b""
    offset = 12
    while offset < len(data) and data[offset]:
        if data[offset] & 0xC0:
            return b""  # a compression pointer has no place in a query
        offset += data[offset] + 1
    end = offset + 5
    return data[12:end] if end <= len(data) else b""


def _error_wire(query: bytes, rcode: int, *, ra: bool) -> bytes:
    """A bare answer with `rcode`, echoing the ID, opcode, RD and the question when readable."""
    question = _question(query)
    flags = bytes((0x80 | (query[2] & 0x79), (0x80 if ra else 0) | rcode))
    return query[:2] + flags + struct.pack("!HHHH", 1 if question else 0, 0, 0, 0) + question


def _rcode(wire: bytes) -> int:
    return wire[3] & 0x0F


def _qtype_name(code: int) -> str:
    name = QTYPE.get(code)
    return name if not name.isdigit() else f"TYPE{name}"


class _Reply(NamedTuple):
    wire: bytes
    qtype: str
    cacheable: bool


class _Forward(NamedTuple):
    qtype: str
    limit: int


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    chunks, missing = [], size
    while missing:
        chunk = conn.recv(missing)
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _parse_upstream(text: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:5353`, `fd00::1`, `[fd00::1]:5353` -> (address, port)."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, raw_port = text.split(":")
        port = int(raw_port)
    if not 0 < port < 65536:
        raise ValueError(f"upstream {text!r}: port out of range")
    return _address_key(host), port


def resolv_conf_upstreams(path: Path = Path("/etc/resolv.conf")) -> tuple[str, ...]:
    """The host's nameservers that are not loopback (a loopback one is the host's own stub, which
    a namespace or another node cannot reach, and may well be a loop back to us)."""
    found = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    if not ipaddress.ip_address(parts[1].split("%", 1)[0]).is_loopback:
                        found.append(parts[1])
    return tuple(found)


# --- network namespaces --------------------------------------------------------------------------


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _netns_path(netns: str) -> Path:
    if not _NETNS_NAME.fullmatch(netns):
        raise DnsError(f"{netns!r} is not the name of a network namespace under {NETNS_DIR}")
    path = NETNS_DIR / netns
    if not path.exists():
        raise DnsError(f"no network namespace {netns!r} ({path} does not exist)")
    return path


def enter_netns(netns: str) -> None:
    """Move the calling thread (only it) into /run/netns/<netns> for good."""
    fd = os.open(_netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def in_netns(netns: str, make: Callable[[], T]) -> T:
    """`make()` run in a short-lived thread inside the namespace; what it returns (sockets keep the
    namespace they were made in) comes back to the caller, whose thread never moves."""
    if not netns:
        return make()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            enter_netns(netns)
            outcome["value"] = make()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


# --- the server ----------------------------------------------------------------------------------


class DnsServer:
    """One node's DNS server: UDP and TCP on `address:port` (port 0 picks a free one, see `.port`)."""

    def __init__(
        self,
        address: str,
        port: int = 53,
        *,
        upstreams: Sequence[str] = (),
        netns: str = "",
        domain: str = DEFAULT_DOMAIN,
        forward_timeout: float = FORWARD_TIMEOUT,
    ) -> None:
        ip = ipaddress.ip_address(address)
        if ip.is_unspecified:
            raise ValueError("the DNS server binds one explicit address of the node, never the wildcard")
        self.address = ip.compressed
        self.family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self.port = port
        self.netns = netns
        self.domain = _fqdn(domain)
        self.forward_timeout = forward_timeout
        chosen = upstreams or resolv_conf_upstreams()
        self.upstreams = tuple(u for u in map(_parse_upstream, chosen) if u != (self.address, port))
        self._state = _State(Directory(), self.domain)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._by_type: Counter[str] = Counter()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._tcp_slots = threading.BoundedSemaphore(MAX_TCP)
        self._forward_slots = threading.BoundedSemaphore(MAX_FORWARDS)
        self._forwarder: ThreadPoolExecutor | None = None
        self._tcp_pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- life cycle

    def start(self) -> None:
        """Bind UDP and TCP (inside `netns` when set) and serve; DnsError says why it cannot."""
        if self._udp is not None:
            raise DnsError("the DNS server is already running")
        if self.netns:
            _netns_path(self.netns)
        self._udp, self._tcp = in_netns(self.netns, self._bind)
        self.port = self._udp.getsockname()[1]
        self._stopping.clear()
        initializer = (lambda: enter_netns(self.netns)) if self.netns else None
        self._forwarder = ThreadPoolExecutor(MAX_FORWARDS, "dns-forward", initializer=initializer)
        self._tcp_pool = ThreadPoolExecutor(MAX_TCP, "dns-tcp")
        for target, name in ((self._serve_udp, "udp"), (self._serve_tcp, "tcp")):
            thread = threading.Thread(target=target, name=f"dns-{name}-{self.address}:{self.port}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("DNS on %s port %s%s", self.address, self.port, f" (netns {self.netns})" if self.netns else "")

    def stop(self) -> None:
        """Stop serving and close every socket: the port is free when this returns."""
        if self._udp is None or self._tcp is None:
            return
        self._stopping.set()
        for sock in (self._udp, self._tcp, *list(self._connections)):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on them
        for thread in self._threads:
            thread.join(timeout=5)
        if self._tcp_pool is not None:
            self._tcp_pool.shutdown(wait=True, cancel_futures=True)
        if self._forwarder is not None:
            self._forwarder.shutdown(wait=False, cancel_futures=True)  # a late answer meets a closed socket
        self._udp.close()
        self._tcp.close()
        self._udp = self._tcp = None
        self._threads.clear()

    def update(self, directory: Directory) -> None:
        """Answer from `directory` from now on (a bad record raises ValueError; the old one stays).

        Then the process's objects leave the garbage collector's generations (`gc.freeze`): a
        big directory is millions of objects, and a full collection walking them all, set off
        by the allocations of uncached answers, stalled the server for 70-100 ms (measured at
        2,000 queries per second, bench/dns.py). The directory holds no reference cycles: when
        it is replaced, reference counting frees it, frozen or not."""
        self._state = _State(directory, self.domain, self._state)
        gc.freeze()

    @property
    def stats(self) -> DnsStats:
        with self._lock:
            counts, by_type = dict(self._counts), dict(self._by_type)
        return DnsStats(
            queries=counts.get("queries", 0),
            nxdomain=counts.get("nxdomain", 0),
            servfail=counts.get("servfail", 0),
            refused=counts.get("refused", 0),
            forwarded=counts.get("forwarded", 0),
            cache_hits=counts.get("cache_hits", 0),
            by_type=by_type,
        )

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """Both sockets on one port (port 0: the kernel picks it for UDP, TCP must get the same)."""
        for _attempt in range(20):
            udp = socket.socket(self.family, socket.SOCK_DGRAM)
            tcp = socket.socket(self.family, socket.SOCK_STREAM)
            try:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT must not hold the port
                self._bind_one(udp, self.port, "UDP")
                port = udp.getsockname()[1]
                try:
                    self._bind_one(tcp, port, "TCP")
                except DnsError:
                    if self.port == 0:
                        udp.close()
                        tcp.close()
                        continue
                    raise
                tcp.listen(128)
                return udp, tcp
            except BaseException:
                udp.close()
                tcp.close()
                raise
        raise DnsError(f"no port free for both UDP and TCP on {self.address}")

    def _bind_one(self, sock: socket.socket, port: int, proto: str) -> None:
        where = f" in network namespace {self.netns}" if self.netns else ""
        try:
            sock.bind((self.address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise DnsError(f"{self.address} is not an address of this node{where}; add it first") from exc
            if exc.errno == errno.EADDRINUSE:
                raise DnsError(f"{proto} port {port} on {self.address}{where} is already in use") from exc
            if exc.errno == errno.EACCES:
                raise DnsError(f"binding {proto} port {port} needs root or CAP_NET_BIND_SERVICE") from exc
            raise DnsError(f"cannot bind {proto} {self.address} port {port}{where}: {exc}") from exc

    # -- counting

    def _count(self, qtype: str, rcode: int, *, forwarded: bool = False, hit: bool = False) -> None:
        with self._lock:
            self._counts["queries"] += 1
            self._by_type[qtype] += 1
            if rcode == _NXDOMAIN:
                self._counts["nxdomain"] += 1
            elif rcode == _SERVFAIL:
                self._counts["servfail"] += 1
            elif rcode == _REFUSED:
                self._counts["refused"] += 1
            if forwarded:
                self._counts["forwarded"] += 1
            if hit:
                self._counts["cache_hits"] += 1

    # -- UDP

    def _serve_udp(self) -> None:
        """The hot loop: an answer already packed for this tenant and these bytes goes straight back."""
        sock = self._udp
        assert sock is not None
        while True:
            try:
                data, peer = sock.recvfrom(65535)
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if not data:
                if self._stopping.is_set():
                    return
                continue
            state = self._state
            host = peer[0]
            tenant = state.clients.get(host if "%" not in host else host.split("%", 1)[0])
            cached = state.cache.get((tenant, data[2:]))
            if cached is not None:
                self._count(cached.qtype, cached.rcode, hit=True)
                with contextlib.suppress(OSError):
                    sock.sendto(data[:2] + cached.wire, peer)
                continue
            try:
                self._udp_miss(sock, state, tenant, data, peer)
            except Exception:
                log.exception("DNS: answering %s failed", peer[0])

    def _udp_miss(self, sock: socket.socket, state: _State, tenant: str | None, data: bytes, peer: tuple) -> None:
        outcome = self._resolve(state, tenant, data, tcp=False)
        if outcome is None:
            return
        if isinstance(outcome, _Forward):
            if not self._forward_slots.acquire(blocking=False):
                self._send(sock, _error_wire(data, _SERVFAIL, ra=True), peer, outcome.qtype)
                return
            assert self._forwarder is not None
            try:
                self._forwarder.submit(self._forward_udp, sock, data, peer, outcome)
            except RuntimeError:  # stopping, or the pool could not enter the namespace (gone)
                self._forward_slots.release()
                self._send(sock, _error_wire(data, _SERVFAIL, ra=True), peer, outcome.qtype)
            return
        if outcome.cacheable:
            state.remember((tenant, data[2:]), _Cached(outcome.wire[2:], outcome.qtype, _rcode(outcome.wire)))
        self._send(sock, outcome.wire, peer, outcome.qtype)

    def _send(self, sock: socket.socket, wire: bytes, peer: tuple, qtype: str, *, forwarded: bool = False) -> None:
        self._count(qtype, _rcode(wire), forwarded=forwarded)  # first: whoever got the answer sees it counted
        with contextlib.suppress(OSError):
            sock.sendto(wire, peer)

    def _forward_udp(self, sock: socket.socket, data: bytes, peer: tuple, outcome: _Forward) -> None:
        try:
            wire = self._forward(data, tcp=False, limit=outcome.limit)
        except Exception:  # nobody reads this future: say it here
            log.exception("DNS: forwarding for %s failed", peer[0])
            wire = _error_wire(data, _SERVFAIL, ra=True)
        finally:
            self._forward_slots.release()
        self._send(sock, wire, peer, outcome.qtype, forwarded=True)

    # -- TCP

    def _serve_tcp(self) -> None:
        listener = self._tcp
        assert listener is not None and self._tcp_pool is not None
        while not self._stopping.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)  # e.g. out of file descriptors: do not spin
                continue
            if not self._tcp_slots.acquire(blocking=False):
                conn.close()
                continue
            self._connections.add(conn)
            try:
                self._tcp_pool.submit(self._serve_connection, conn, peer)
            except RuntimeError:  # stopping
                self._connections.discard(conn)
                self._tcp_slots.release()
                conn.close()

    def _serve_connection(self, conn: socket.socket, peer: tuple) -> None:
        """Length-prefixed queries one after the other (RFC 7766) until the client is idle or leaves."""
        try:
            conn.settimeout(TCP_IDLE)
            while not self._stopping.is_set():
                header = _recv_exactly(conn, 2)
                data = header and _recv_exactly(conn, struct.unpack("!H", header)[0])
                if not data:
                    return
                state = self._state
                tenant = state.clients.get(peer[0].split("%", 1)[0])
                wire = self._answer_tcp(state, tenant, data)
                if wire is not None:
                    conn.sendall(struct.pack("!H", len(wire)) + wire)
        except OSError:
            pass
        except Exception:
            log.exception("DNS: answering %s over TCP failed", peer[0])
        finally:
            self._connections.discard(conn)
            self._tcp_slots.release()
            conn.close()

    def _answer_tcp(self, state: _State, tenant: str | None, data: bytes) -> bytes | None:
        outcome = self._resolve(state, tenant, data, tcp=True)
        if outcome is None:
            return None
        if isinstance(outcome, _Reply):
            self._count(outcome.qtype, _rcode(outcome.wire))
            return outcome.wire
        wire = _error_wire(data, _SERVFAIL, ra=True)
        forwarded = False
        if self._forwarder is not None and self._forward_slots.acquire(blocking=False):
            try:
                wire = self._forwarder.submit(self._forward, data, tcp=True, limit=65535).result()
                forwarded = True
            except RuntimeError:  # stopping
                pass
            finally:
                self._forward_slots.release()
        self._count(outcome.qtype, _rcode(wire), forwarded=forwarded)
        return wire

    # -- answering

    def _resolve(self, state: _State, tenant: str | None, data: bytes, *, tcp: bool) -> _Reply | _Forward | None:
        """The answer to one query, or `_Forward` when it is for the upstreams; None: drop it."""
        known = tenant is not None
        try:
            request = DNSRecord.parse(data)
        except Exception:  # dnslib raises several kinds on garbage
            return _Reply(_error_wire(data, _FORMERR, ra=known), "INVALID", False) if len(data) >= 12 else None
        if request.header.qr:
            return None  # a response sent to us: answering it could start a loop
        if request.header.opcode != 0:
            return _Reply(_error_wire(data, _NOTIMP, ra=known), "INVALID", False)
        if len(request.questions) != 1:
            return _Reply(_error_wire(data, _FORMERR, ra=known), "INVALID", False)
        question = request.q
        qtype = _qtype_name(question.qtype)
        edns = next((rr for rr in request.ar if rr.rtype == _OPT), None)
        limit = 65535 if tcp else max(512, min(edns.rclass, MAX_UDP)) if edns else 512
        name = str(question.qname).lower()
        view = state.view(tenant)
        zone = state.zone_of(name)
        if question.qclass not in (1, 255):  # IN, ANY
            return _Reply(_error_wire(data, _REFUSED, ra=known), qtype, True)
        if name not in view.names and zone is None:
            if not known:
                return _Reply(_error_wire(data, _REFUSED, ra=False), qtype, True)
            return _Forward(qtype, limit)
        reply = self._local(state, view, request, name, zone, known=known)
        if edns is not None:
            reply.add_ar(EDNS0(udp_len=EDNS_PAYLOAD))
        wire = reply.pack()
        if len(wire) > limit:
            wire = self._truncated(request, reply, edns is not None)
        return _Reply(wire, qtype, not tcp)

    def _local(
        self, state: _State, view: _View, request: DNSRecord, name: str, zone: str | None, *, known: bool
    ) -> DNSRecord:
        """An authoritative answer from the asking tenant's view: records, NODATA or NXDOMAIN."""
        question = request.q
        reply = DNSRecord(DNSHeader(id=request.header.id, qr=1, aa=1, ra=int(known), rd=request.header.rd), q=question)
        apex = zone or state.apex(name)
        rrsets = view.names.get(name)
        if rrsets is None and name != apex and not view.has_below(name):
            reply.header.rcode = _NXDOMAIN
            reply.add_auth(self._soa(state, apex))
            return reply
        wanted = (
            list((rrsets or {}).items())
            if question.qtype == _ANY
            else [(question.qtype, (rrsets or {}).get(question.qtype, ()))]
        )
        for rtype, values in wanted:
            for value in values:
                reply.add_answer(RR(question.qname, rtype, rdata=_rdata(rtype, value), ttl=state.ttl))
        if name == apex and question.qtype in (_SOA, _ANY):
            reply.add_answer(self._soa(state, apex, owner=question.qname))
        if not reply.rr:
            reply.add_auth(self._soa(state, apex))
        if question.qtype in (_SRV, _ANY):
            self._add_targets(state, view, reply, (rrsets or {}).get(_SRV, ()))
        return reply

    def _add_targets(self, state: _State, view: _View, reply: DNSRecord, srvs: tuple) -> None:
        """SRV targets' addresses in the additional section: one round trip instead of three."""
        for target in dict.fromkeys(srv[3] for srv in srvs):
            for rtype in (_A, _AAAA):
                for value in view.names.get(target, {}).get(rtype, ()):
                    reply.add_ar(RR(target, rtype, rdata=_rdata(rtype, value), ttl=state.ttl))

    def _soa(self, state: _State, apex: str, owner: DNSLabel | str | None = None) -> RR:
        """One SOA for every negative answer of a zone: serial fixed, minimum = ttl (RFC 2308)."""
        ttl = state.ttl
        times = (1, 3600, 600, 86400, ttl)
        rdata = SOA(mname=f"ns.{self.domain}", rname=f"hostmaster.{self.domain}", times=times)
        return RR(owner or apex, _SOA, rdata=rdata, ttl=ttl)

    @staticmethod
    def _truncated(request: DNSRecord, reply: DNSRecord, edns: bool) -> bytes:
        """Too large for UDP: the header with TC and the question, so the client asks again over TCP."""
        header = reply.header
        short = DNSRecord(
            DNSHeader(id=header.id, qr=1, aa=header.aa, tc=1, ra=header.ra, rd=header.rd, rcode=header.rcode),
            q=request.q,
        )
        if edns:
            short.add_ar(EDNS0(udp_len=EDNS_PAYLOAD))
        return short.pack()

    # -- forwarding

    def _forward(self, data: bytes, *, tcp: bool, limit: int) -> bytes:
        """The first upstream's usable answer (another ID on the wire, the client's put back), else SERVFAIL."""
        question = _question(data)
        if question:
            for host, port in self.upstreams:
                try:
                    wire = self._exchange(host, port, data, question, tcp=tcp)
                except OSError as exc:  # refused, unreachable, timed out
                    log.debug("DNS: upstream %s port %s: %s", host, port, exc)
                    continue
                if _rcode(wire) in (_SERVFAIL, _REFUSED):
                    continue
                wire = data[:2] + wire[2:]
                if len(wire) > limit:
                    flags = bytes((wire[2] | 0x02, wire[3]))
                    wire = wire[:2] + flags + struct.pack("!HHHH", 1, 0, 0, 0) + question
                return wire
        return _error_wire(data, _SERVFAIL, ra=True)

    def _exchange(self, host: str, port: int, data: bytes, question: bytes, *, tcp: bool) -> bytes:
        """One query to one upstream from a fresh socket (random source port and ID)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        query_id = secrets.token_bytes(2)
        message = query_id + data[2:]
        deadline = time.monotonic() + self.forward_timeout
        with socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.forward_timeout)
            sock.connect((host, port))
            if tcp:
                sock.sendall(struct.pack("!H", len(message)) + message)
                header = _recv_exactly(sock, 2)
                wire = header and _recv_exactly(sock, struct.unpack("!H", header)[0])
                if not wire or not _answers(wire, query_id, question):
                    raise OSError(f"no valid answer from {host} over TCP")
                return wire
            sock.send(message)
            while True:  # skip late or forged datagrams until the deadline
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                wire = sock.recv(65535)
                if _answers(wire, query_id, question):
                    return wire
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no valid answer from {host}")


def _answers(wire: bytes, query_id: bytes, question: bytes) -> bool:
    """Is `wire` the answer to our query: our ID, a response, the same question (any case)?"""
    return (
        len(wire) >= 12
        and wire[:2] == query_id
        and bool(wire[2] & 0x80)
        and wire[4:6] == b"\x00\x01"
        and wire[12 : 12 + len(question)].lower() == question.lower()
    )
