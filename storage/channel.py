"""The data channel between agents: how a volume's snapshot streams travel from one node to
another (replication), never through the database or the broker.

Every agent serves a small HTTP endpoint (HIVEMIND_DATA_ADDRESS:HIVEMIND_DATA_PORT, default
the node's address, port 7480) in a daemon thread of its worker, and registers its URL as the
node's DataEndpoint row. It answers two requests, each only with a token signed with the
platform's secret for exactly that request, valid TOKEN_TTL seconds:

    GET /v1/pools/<pool id>/volumes/<v>/snapshots/      the snapshots of <v> this pool holds
    PUT /v1/pools/<pool id>/volumes/<v>/snapshots/<s>?parent=<p>
        body: a stream from Provider.export (chunked); stored with Provider.receive

A token names the operation, pool, volume, snapshot and parent; the receiver refuses a
missing, forged or expired one (401), one for another request or for a pool its node does not
hold (403). The sending step mints the token (storage/replication.py): agents hold the platform
secret like every process of the platform. Both ends count the stream's bytes; the receiver
answers with its count.

The channel is plain HTTP: a token cannot be replayed for anything else than the transfer it
names and expires in a minute, but the stream itself is readable on the wire (an encrypted
volume's stream is ciphertext). Run it over a network you trust, or a VPN between nodes.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

from django.core import signing
from django.db import connections

from storage.providers.base import StorageError, check_name

log = logging.getLogger(__name__)

SALT = "hivemind.storage.channel"
TOKEN_TTL = 60  # seconds: a token is minted just before its request
CHUNK = 1 << 20
RECEIVE_WAIT = 60  # seconds a receive waits for an earlier one into the same volume to end
PATH = re.compile(
    r"/v1/pools/(?P<pool>[0-9]{1,18})/volumes/(?P<volume>v[0-9]{1,18})/snapshots/(?P<snapshot>s[0-9]{1,18})?"
)


class ChannelError(RuntimeError):
    """The other end refused or failed; `status` is its HTTP status (0: it could not be reached)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


# --- tokens ------------------------------------------------------------------------------------


def mint(*, op: str, pool: int, volume: str, snapshot: str | None = None, parent: str | None = None) -> str:
    """A token for one request: `op` ("list" or "receive") on that pool, volume and snapshot."""
    claims = {"op": op, "pool": int(pool), "volume": volume, "snapshot": snapshot, "parent": parent}
    return signing.dumps(claims, salt=SALT, compress=False)


def verify(token: str, **expected) -> dict:
    """The token's claims if it is genuine, fresh and names exactly `expected`; else PermissionError
    (args: HTTP status, reason)."""
    if not token:
        raise PermissionError(401, "a transfer token is required (Authorization: Bearer <token>)")
    try:
        claims = signing.loads(token, salt=SALT, max_age=TOKEN_TTL)
    except signing.SignatureExpired:
        raise PermissionError(401, "the transfer token expired") from None
    except signing.BadSignature:
        raise PermissionError(401, "the transfer token is not genuine") from None
    if not isinstance(claims, dict):
        raise PermissionError(401, "the transfer token is not genuine")
    for key, value in expected.items():
        if claims.get(key) != value:
            raise PermissionError(403, f"the transfer token is not for this request ({key})")
    return claims


# --- the receiving end -------------------------------------------------------------------------


class _ChunkedReader:
    """The body of a request sent with Transfer-Encoding: chunked, as a file (read(n))."""

    def __init__(self, raw):
        self.raw = raw
        self.left = 0  # bytes left in the current chunk
        self.done = False

    def _next_chunk(self) -> None:
        line = self.raw.readline(1024)
        if not line.endswith(b"\n"):
            raise ConnectionError("the stream ended in the middle of a chunk header")
        try:
            self.left = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise ConnectionError(f"bad chunk header {line[:40]!r}") from None
        if self.left == 0:
            while self.raw.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            self.done = True

    def read(self, size: int = -1) -> bytes:
        if self.done:
            return b""
        if self.left == 0:
            self._next_chunk()
            if self.done:
                return b""
        want = self.left if size < 0 else min(size, self.left)
        data = self.raw.read(want)
        if len(data) < want:
            raise ConnectionError("the stream ended in the middle of a chunk")
        self.left -= len(data)
        if self.left == 0 and self.raw.readline(8) not in (b"\r\n", b"\n"):
            raise ConnectionError("a chunk does not end with CRLF")
        return data


class _LengthReader:
    def __init__(self, raw, length: int):
        self.raw, self.left = raw, length
        self.done = length == 0

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            self.done = True
            return b""
        data = self.raw.read(self.left if size < 0 else min(size, self.left))
        if not data:
            raise ConnectionError(f"the stream ended {self.left} bytes early")
        self.left -= len(data)
        self.done = self.left == 0
        return data


class _Counting:
    def __init__(self, inner):
        self.inner, self.count = inner, 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.count += len(data)
        return data


_receive_locks: dict[tuple[int, str], threading.Lock] = {}
_receive_locks_guard = threading.Lock()


def _receive_lock(pool: int, volume: str) -> threading.Lock:
    with _receive_locks_guard:
        return _receive_locks.setdefault((pool, volume), threading.Lock())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hivemind-data/1"
    node_name = ""  # set on the subclass the server makes

    def log_message(self, format, *args) -> None:
        log.debug("data endpoint %s: " + format, self.node_name, *args)

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, op: str):
        """(pool, provider, volume, snapshot, parent, claims) for a request its token allows."""
        from storage.models import StoragePool
        from storage.steps import provider_of

        parts = urlsplit(self.path)
        match = PATH.fullmatch(parts.path)
        if match is None or (op == "receive") != bool(match["snapshot"]):
            raise LookupError(f"no such resource: {parts.path}")
        parent = (parse_qs(parts.query).get("parent") or [None])[0]
        if parent is not None:
            check_name(parent, "snapshot")
        header = self.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        pool_id, volume, snapshot = int(match["pool"]), match["volume"], match["snapshot"]
        verify(token, op=op, pool=pool_id, volume=volume, snapshot=snapshot, parent=parent)
        pool = StoragePool.objects.select_related("node").filter(pk=pool_id).first()
        if pool is None or pool.node.name != self.node_name:
            raise PermissionError(403, f"node {self.node_name} holds no pool {pool_id}")
        return pool, provider_of(pool), volume, snapshot, parent

    def _handle(self, op: str) -> None:
        try:
            pool, provider, volume, snapshot, parent = self._route(op)
            if op == "list":
                self._answer(200, {"snapshots": provider.snapshots(volume)})
            else:
                self._receive(pool, provider, volume, snapshot, parent)
        except PermissionError as exc:
            status, reason = exc.args if len(exc.args) == 2 else (403, str(exc))
            self.close_connection = True  # the body (if any) is not read
            self._answer(status, {"detail": reason})
        except LookupError as exc:
            self.close_connection = True
            self._answer(404, {"detail": str(exc)})
        except (StorageError, OSError, ValueError) as exc:
            self.close_connection = True
            log.warning("data endpoint %s: %s %s failed: %s", self.node_name, self.command, self.path, exc)
            self._answer(409 if isinstance(exc, StorageError) else 400, {"detail": str(exc)[:2000]})
        finally:
            connections.close_all()  # this request's thread ends: its database connection goes with it

    def _receive(self, pool, provider, volume: str, snapshot: str, parent: str | None) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _ChunkedReader(self.rfile)
        else:
            body = _LengthReader(self.rfile, int(self.headers.get("Content-Length") or 0))
        counted = _Counting(body)
        lock = _receive_lock(pool.pk, volume)
        # A receive cut off by its sender's death may still be cleaning up: wait for it.
        if not lock.acquire(timeout=RECEIVE_WAIT):
            raise StorageError(f"volume {volume} is receiving another stream in pool {pool.name}")
        started = time.monotonic()
        try:
            provider.receive(volume, snapshot, counted, parent=parent)
        finally:
            lock.release()
        if not body.done:
            self.close_connection = True  # held already (the stream was not read) or ended early
        seconds = time.monotonic() - started
        log.info(
            "data endpoint %s: received %s of volume %s (parent %s) into pool %s: %d bytes in %.2f s",
            self.node_name, snapshot, volume, parent or "none", pool.name, counted.count, seconds,
        )  # fmt: skip
        self._answer(200, {"snapshot": snapshot, "bytes": counted.count, "seconds": round(seconds, 3)})

    def do_GET(self) -> None:
        self._handle("list")

    def do_PUT(self) -> None:
        self._handle("receive")


class DataServer:
    """This node's data endpoint: a threaded HTTP server in a daemon thread."""

    def __init__(self, node_name: str, address: str, port: int):
        handler = type("Handler", (_Handler,), {"node_name": node_name})
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        self.server = server_class((address, port), handler)
        self.server.daemon_threads = True
        host, bound = self.server.server_address[:2]
        self.url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"data-{node_name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def register(node_name: str, url: str) -> bool:
    """Record where the node's data endpoint is; False while the node has no row yet."""
    from hivemind.nodes.models import Node
    from storage.models import DataEndpoint

    if DataEndpoint.objects.filter(node__name=node_name, url=url).exists():
        return True
    node = Node.objects.filter(name=node_name).first()
    if node is None:
        return False
    DataEndpoint.objects.update_or_create(node=node, defaults={"url": url})
    return True


# --- the sending end ---------------------------------------------------------------------------


def endpoint_of(node) -> str:
    from storage.models import DataEndpoint

    found = DataEndpoint.objects.filter(node=node).values_list("url", flat=True).first()
    if not found:
        raise ChannelError(f"node {node.name} has no data endpoint (its agent has not registered one)")
    return found


def _url(base: str, pool: int, volume: str, snapshot: str | None = None, parent: str | None = None) -> str:
    url = f"{base}/v1/pools/{pool}/volumes/{volume}/snapshots/{snapshot or ''}"
    return f"{url}?parent={quote(parent)}" if parent else url


def _error(response) -> ChannelError:
    try:
        detail = response.json().get("detail", "")
    except ValueError:
        detail = response.text[:500]
    return ChannelError(f"the data endpoint answered {response.status_code}: {detail}", response.status_code)


def held(base: str, *, pool: int, volume: str, timeout: float = 30) -> list[str]:
    """The snapshots of `volume` the pool behind the endpoint `base` holds."""
    import requests

    token = mint(op="list", pool=pool, volume=volume)
    try:
        response = requests.get(_url(base, pool, volume), headers={"Authorization": f"Bearer {token}"},
                                timeout=timeout)  # fmt: skip
    except requests.RequestException as exc:
        raise ChannelError(f"cannot reach the data endpoint {base}: {exc}") from None
    if response.status_code != 200:
        raise _error(response)
    return list(response.json()["snapshots"])


def _paced(source, counter: list[int], rate: int) -> Iterator[bytes]:
    """The stream in chunks, at most `rate` bytes per second (0: no limit), counted."""
    started = time.monotonic()
    while chunk := source.read(CHUNK if not rate else min(CHUNK, max(rate // 4, 4096))):
        counter[0] += len(chunk)
        yield chunk
        if rate:
            ahead = counter[0] / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def send(base: str, *, pool: int, volume: str, snapshot: str, parent: str | None, export, rate: int = 0) -> dict:
    """Stream `export(out)` (a provider's export into a file object) to the pool behind `base`
    as snapshot `snapshot` of `volume`; returns {"sent", "received", "seconds"} (bytes counted
    on each end)."""
    import os

    import requests

    token = mint(op="receive", pool=pool, volume=volume, snapshot=snapshot, parent=parent)
    read_end, write_end = os.pipe()
    produced: dict = {}

    def produce() -> None:
        try:
            with os.fdopen(write_end, "wb") as out:
                produced["bytes"] = export(out)
        except BaseException as exc:
            produced["error"] = exc

    started = time.monotonic()
    producer = threading.Thread(target=produce, name=f"export-{volume}-{snapshot}", daemon=True)
    producer.start()
    counter = [0]
    try:
        with os.fdopen(read_end, "rb") as source:
            response = requests.put(
                _url(base, pool, volume, snapshot, parent),
                data=_paced(source, counter, rate),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
                timeout=(10, 3600),
            )
    except requests.RequestException as exc:
        producer.join(timeout=30)
        failed = produced.get("error")
        if failed is not None and not isinstance(failed, BrokenPipeError | StorageError):
            raise failed from exc  # the export broke, not the connection
        raise ChannelError(f"sending {snapshot} of {volume} to {base}: {exc}") from None
    finally:
        producer.join(timeout=30)
    if response.status_code != 200:
        raise _error(response)
    if "error" in produced:
        raise produced["error"]
    return {
        "sent": counter[0],
        "received": int(response.json().get("bytes", 0)),
        "seconds": round(time.monotonic() - started, 3),
    }
