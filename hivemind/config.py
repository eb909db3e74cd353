"""Every HIVEMIND_* variable, read and validated in one place.

`load_config()` turns an environment mapping into a frozen `Config`, or raises
`ConfigError` whose message names the variable and what is wrong with it. The
settings modules read only from `CONFIG`; entry points (manage.py, the Celery app,
the WSGI app) print a `ConfigError` as one line instead of a traceback.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from hivemind.core.names import DNS_LABEL_RULE, is_dns_label

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_HOSTNAME = re.compile(r"^(\*|\.?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\.)$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


class ConfigError(ImproperlyConfigured):
    """A HIVEMIND_* value is missing, malformed or points at nothing."""

    def __init__(self, variable: str, problem: str):
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


@dataclass(frozen=True)
class Config:
    var_dir: Path
    database_url: str
    redis_url: str
    docker_host: str
    node_name: str
    secret_key: str
    debug: bool
    allowed_hosts: tuple[str, ...]
    csrf_trusted_origins: tuple[str, ...]
    web_bind: str
    web_workers: int
    web_threads: int
    step_soft_time_limit: int
    step_time_limit: int
    log_level: str
    otel_enabled: bool
    reconcile_interval: int
    step_heartbeat: int
    worker_concurrency: int
    node_address: str
    pools: tuple[tuple[str, str], ...]  # HIVEMIND_{,SERVICE_}IPV{4,6}_POOL given -> prefix (IPAM's first pools)
    dns_address: str  # the node DNS server's address (on the node's loopback); "" = no node DNS
    node_netns: str  # the network namespace (/run/netns/<name>) holding the node's network; "" = the agent's own
    node_labels: tuple[tuple[str, str], ...]
    node_heartbeat: int
    sample_interval: int  # seconds between an agent's usage samples; 0 turns sampling off
    sample_retention: int  # seconds usage samples are kept
    rollup_retention_1m: int  # seconds the 1-minute usage rollups are kept
    rollup_retention_10m: int  # seconds the 10-minute usage rollups are kept
    storage_pool: str  # the node's own default pool: "off", "auto" (btrfs when it can, else local), "btrfs", "local"
    storage_dir: str  # where it lives ("" = <var dir>/storage)
    storage_size: int  # bytes of the btrfs loop file (sparse)
    crypt_scryptn: int  # gocryptfs -scryptn of new encrypted volumes (log2 of scrypt's cost; tests use 10)
    # The platform's master key from HIVEMIND_MASTER_KEY (b"" = the var dir's master.key, tenants/keys.py).
    master_key: bytes = field(repr=False)
    data_address: str  # where the agent's data endpoint (volume replication) listens; "" = the node's address
    data_port: int  # its TCP port; 0 = no data endpoint on this node
    csi_socket: str  # the unix socket the CSI endpoint serves (storage/csi/); "" = none on this node
    replication_rate: int  # bytes per second a node sends replication streams at; 0 = as fast as it can
    notifier_attempts: int  # how many times a notification is tried before its delivery is failed
    notifier_backoff: int  # seconds before the first retry; each next one waits twice as long (capped at an hour)
    notifier_timeout: int  # seconds one delivery attempt (HTTP request, SMTP session) may take
    alert_interval: int  # seconds between two evaluations of every alert rule (alerting/services.py)
    backup_dir: str  # where `local` backup locations live (a tenant's under <dir>/<tenant>/); "" = <var dir>/backups
    # Which addresses a tenant's S3/Azure/GCS location may reach (backups/endpoints.py): "private"
    # (any but link-local, multicast and reserved ones), "public" (global addresses only), or networks.
    backup_endpoints: tuple[str, ...]
    # Tracing (hivemind/core/tracing.py): where spans go over OTLP/HTTP, as whom, how many.
    otel_endpoint: str  # the collector's OTLP/HTTP traces URL
    otel_service_name: str
    otel_sample_ratio: float  # share of new traces kept (0..1); a step follows its workflow's choice
    otel_headers: tuple[tuple[str, str], ...] = field(repr=False)  # sent with every export; may hold credentials
    log_format: str  # "text" or "json" (one JSON object per line)

    @property
    def database_is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(name, f"expected true or false (1/0, yes/no, on/off), got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"expected a number from {low} to {high}, got {value}")
    return value


def _database_url(env: Mapping[str, str], var_dir: Path) -> str:
    name = "HIVEMIND_DATABASE_URL"
    raw = env.get(name, "").strip()
    if not raw:
        return f"sqlite:///{var_dir / 'hivemind.sqlite3'}"
    parts = urlsplit(raw)
    if parts.scheme == "sqlite":
        if not parts.path or parts.path == "/":
            raise ConfigError(name, "a sqlite URL needs a file path, e.g. sqlite:////srv/hivemind/db.sqlite3")
        return raw
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        if not parts.hostname and "host=" not in (parts.query or ""):
            raise ConfigError(name, "a PostgreSQL URL needs a host, e.g. postgres://user@127.0.0.1:5432/hivemind")
        if not parts.path.strip("/"):
            raise ConfigError(name, "a PostgreSQL URL needs a database name after the host, e.g. .../hivemind")
        _port(name, parts)
        return raw
    raise ConfigError(
        name, f"unsupported scheme {parts.scheme or '(none)'!r}; use sqlite:///PATH or postgres://USER@HOST:PORT/NAME"
    )


def _port(name: str, parts) -> None:
    try:
        parts.port  # noqa: B018 - urllib validates the port on access
    except ValueError:
        raise ConfigError(name, f"invalid port in {parts.netloc!r}") from None


def _redis_url(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_REDIS_URL"
    raw = env.get(name, "").strip() or "redis://127.0.0.1:6379/0"
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(name, f"unsupported scheme {parts.scheme or '(none)'!r}; use redis://HOST:PORT/DB")
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ConfigError(name, "a redis URL needs a host, e.g. redis://127.0.0.1:6379/0")
        _port(name, parts)
        db = parts.path.strip("/")
        if db and not (db.isdigit() and int(db) < 16):
            raise ConfigError(name, f"the database number must be 0-15, got {db!r}")
    elif not parts.path:
        raise ConfigError(name, "a unix redis URL needs a socket path, e.g. unix:///run/redis.sock")
    return raw


def _docker_host(env: Mapping[str, str], var_dir: Path) -> str:
    name = "HIVEMIND_DOCKER_HOST"
    raw = env.get(name, "").strip()
    if not raw:
        if Path("/var/run/docker.sock").exists():
            return "unix:///var/run/docker.sock"
        return f"unix://{var_dir / 'docker' / 'docker.sock'}"
    parts = urlsplit(raw)
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(name, "a unix Docker endpoint needs a socket path, e.g. unix:///var/run/docker.sock")
        return raw
    if parts.scheme in ("tcp", "http", "https"):
        if not parts.hostname:
            raise ConfigError(name, "a TCP Docker endpoint needs a host, e.g. tcp://10.0.0.5:2375")
        _port(name, parts)
        return raw
    raise ConfigError(name, f"unsupported scheme {parts.scheme or '(none)'!r}; use unix:///PATH or tcp://HOST:PORT")


def _node_name(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_NODE_NAME"
    raw = env.get(name, "").strip()
    if not raw:
        raw = socket.gethostname().split(".")[0].lower()
        raw = re.sub(r"[^a-z0-9-]", "-", raw).strip("-") or "node"
    if not is_dns_label(raw):
        raise ConfigError(name, f"expected {DNS_LABEL_RULE}, got {raw!r}")
    return raw


def _node_address(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_NODE_ADDRESS"
    raw = env.get(name, "").strip()
    if not raw:
        return ""  # the agent finds the address it reaches the broker from
    bare = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if raw.startswith(".") or raw == "*" or not _HOSTNAME.match(raw):
        raise ConfigError(
            name, f"expected an IP address or a host name, e.g. 10.0.0.5 or edge-01.example.com, got {raw!r}"
        )
    return raw


def _node_netns(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_NODE_NETNS"
    raw = env.get(name, "").strip()
    if not raw:
        return ""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", raw):
        raise ConfigError(name, f"expected the name of a network namespace under /run/netns, got {raw!r}")
    if not Path("/run/netns", raw).exists():
        raise ConfigError(name, f"no network namespace {raw!r} (no /run/netns/{raw}; create it with ip netns add)")
    return raw


POOL_VARIABLES = {
    "HIVEMIND_IPV4_POOL": 4, "HIVEMIND_IPV6_POOL": 6, "HIVEMIND_SERVICE_IPV4_POOL": 4, "HIVEMIND_SERVICE_IPV6_POOL": 6,
}  # fmt: skip


def _pools(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The address pools IPAM makes on first use, when given (a prefix of the right family)."""
    found = []
    for name, family in POOL_VARIABLES.items():
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            network = ipaddress.ip_network(raw, strict=True)
        except ValueError as exc:
            raise ConfigError(name, f"expected an IPv{family} prefix such as 10.128.0.0/12: {exc}") from None
        if network.version != family:
            raise ConfigError(name, f"expected an IPv{family} prefix, got {raw}")
        found.append((name, str(network)))
    return tuple(found)


STORAGE_POOLS = ("off", "auto", "btrfs", "local")


def _storage_pool(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_STORAGE_POOL"
    raw = env.get(name, "").strip().lower() or "off"
    if raw not in STORAGE_POOLS:
        raise ConfigError(name, f"expected one of {', '.join(STORAGE_POOLS)}, got {raw!r}")
    return raw


def _storage_dir(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_STORAGE_DIR"
    raw = env.get(name, "").strip()
    if raw and not raw.startswith("/"):
        raise ConfigError(name, f"expected an absolute directory, got {raw!r}")
    if ".." in raw.split("/"):
        raise ConfigError(name, f"'..' is not allowed, got {raw!r}")
    return raw


def _backup_dir(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_BACKUP_DIR"
    raw = env.get(name, "").strip()
    if raw and not raw.startswith("/"):
        raise ConfigError(name, f"expected an absolute directory, got {raw!r}")
    if ".." in raw.split("/"):
        raise ConfigError(name, f"'..' is not allowed, got {raw!r}")
    return raw.rstrip("/") if raw != "/" else raw


def _backup_endpoints(env: Mapping[str, str]) -> tuple[str, ...]:
    import ipaddress

    name = "HIVEMIND_BACKUP_ENDPOINTS"
    raw = env.get(name, "").strip().lower() or "private"
    if raw in ("private", "public"):
        return (raw,)
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigError(name, f"expected private, public or networks such as 10.0.0.0/8,fd00::/8; got {part!r}") \
                from None  # fmt: skip
    return tuple(networks)


def _storage_size(env: Mapping[str, str]) -> int:
    from hivemind.core.units import parse_bytes

    name = "HIVEMIND_STORAGE_SIZE"
    raw = env.get(name, "").strip() or "20Gi"
    try:
        size = parse_bytes(raw)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None
    if size < 256 * 2**20:
        raise ConfigError(name, f"a btrfs pool needs at least 256Mi, got {raw}")
    return size


def _data_address(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_DATA_ADDRESS"
    raw = env.get(name, "").strip()
    if not raw:
        return ""
    bare = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        raise ConfigError(name, f"expected the IP address the data endpoint listens on, got {raw!r}") from None
    if address.is_multicast:
        raise ConfigError(name, f"expected a unicast address, got {raw}")
    return str(address)


def _csi_socket(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_CSI_SOCKET"
    raw = env.get(name, "").strip()
    if not raw:
        return ""
    if not raw.startswith("/") or ".." in raw.split("/"):
        raise ConfigError(name, f"expected an absolute path for the CSI unix socket, got {raw!r}")
    if len(raw.encode()) > 107:
        raise ConfigError(name, f"a unix socket path has at most 107 bytes, got {len(raw.encode())}")
    return raw


MASTER_KEY_BYTES = 32


def parse_master_key(raw: str, source: str = "HIVEMIND_MASTER_KEY") -> bytes:
    """A master key as written in HIVEMIND_MASTER_KEY or the var dir's master.key: 32 bytes in
    base64. Raises ValueError saying what is wrong, never echoing the value."""
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{source} is not base64 (expected {MASTER_KEY_BYTES} random bytes in base64, "
                         f"e.g. from `head -c 32 /dev/urandom | base64`)") from None  # fmt: skip
    if len(key) != MASTER_KEY_BYTES:
        raise ValueError(f"{source} holds {len(key)} bytes, not the {MASTER_KEY_BYTES} of a master key")
    return key


def _master_key(env: Mapping[str, str]) -> bytes:
    name = "HIVEMIND_MASTER_KEY"
    raw = env.get(name)
    if raw is None or not raw.strip():
        return b""
    try:
        return parse_master_key(raw, "the value")
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None


def _dns_address(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_DNS_ADDRESS"
    raw = env.get(name, "").strip() or "169.254.20.53"
    if raw.lower() == "off":
        return ""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        raise ConfigError(name, f"expected an IP address for the node DNS server, or off, got {raw!r}") from None
    if address.is_unspecified or address.is_loopback or address.is_multicast:
        raise ConfigError(name, f"expected a unicast address containers can route to, got {raw}")
    return str(address)


def _node_labels(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    from hivemind.nodes.labels import LabelError, parse_labels

    name = "HIVEMIND_NODE_LABELS"
    try:
        return tuple(parse_labels(env.get(name, "")).items())
    except LabelError as exc:
        raise ConfigError(name, str(exc)) from None


def _otel_endpoint(env: Mapping[str, str]) -> str:
    """The collector's OTLP/HTTP traces URL. A bare base URL (http://collector:4318) gets the
    standard path /v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT does."""
    name = "HIVEMIND_OTEL_ENDPOINT"
    raw = env.get(name, "").strip() or "http://127.0.0.1:4318"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        scheme = parts.scheme or "(none)"
        raise ConfigError(name, f"unsupported scheme {scheme!r}; use http(s)://HOST:PORT, e.g. http://127.0.0.1:4318")
    if not parts.hostname:
        raise ConfigError(name, "an OTLP endpoint needs a host, e.g. http://127.0.0.1:4318")
    _port(name, parts)
    if parts.username or parts.password:
        raise ConfigError(name, "put credentials in HIVEMIND_OTEL_HEADERS, not in the URL")
    if parts.query or parts.fragment:
        raise ConfigError(name, "expected no query or fragment (?... or #...) in the URL")
    if parts.path.strip("/") == "":
        return raw.rstrip("/") + "/v1/traces"
    return raw


_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _otel_service_name(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_OTEL_SERVICE_NAME"
    raw = env.get(name, "").strip() or "hivemind"
    if not _SERVICE_NAME.match(raw):
        raise ConfigError(name, f"expected 1 to 63 letters, digits, '.', '_' or '-', got {raw!r}")
    return raw


def _otel_sample_ratio(env: Mapping[str, str]) -> float:
    name = "HIVEMIND_OTEL_SAMPLE_RATIO"
    raw = env.get(name, "").strip()
    if not raw:
        return 1.0
    try:
        ratio = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number from 0 to 1 (the share of traces kept), got {raw!r}") from None
    if not 0.0 <= ratio <= 1.0:  # NaN fails both comparisons
        raise ConfigError(name, f"expected a number from 0 to 1 (the share of traces kept), got {raw!r}")
    return ratio


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")  # an HTTP token (RFC 9110)


def _otel_headers(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """`name=value,name2=value2` (values percent-encoded where needed), as OTEL_EXPORTER_OTLP_HEADERS.
    Errors never echo a value: headers carry credentials."""
    from urllib.parse import unquote

    name = "HIVEMIND_OTEL_HEADERS"
    headers = []
    for position, pair in enumerate((p for p in env.get(name, "").split(",") if p.strip()), start=1):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(name, f"entry {position}: expected NAME=VALUE pairs separated by commas")
        if not _HEADER_NAME.match(key):
            raise ConfigError(name, f"entry {position}: {key[:100]!r} is not an HTTP header name")
        value = unquote(value.strip())
        if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(name, f"header {key}: expected a value of printable characters")
        headers.append((key.lower(), value))
    return tuple(headers)


def _log_format(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_LOG_FORMAT"
    raw = env.get(name, "").strip().lower() or "text"
    if raw not in LOG_FORMATS:
        raise ConfigError(name, f"expected one of {', '.join(LOG_FORMATS)}, got {raw!r}")
    return raw


def _secret_key(env: Mapping[str, str], var_dir: Path) -> str:
    name = "HIVEMIND_SECRET_KEY"
    raw = env.get(name)
    if raw is not None:
        if len(raw) < 32:
            raise ConfigError(name, f"must be at least 32 characters long, got {len(raw)}")
        return raw
    path = var_dir / "secret_key"
    try:
        if path.exists():
            key = path.read_text().strip()
            if len(key) < 32:
                raise ConfigError(
                    name, f"not set, and the generated key in {path} is damaged; delete it to make a new one"
                )
            return key
        var_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        return key
    except FileExistsError:  # another process generated it first
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(name, f"not set, and no key could be generated in {path}: {exc.strerror}") from None


def _hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    name = "HIVEMIND_ALLOWED_HOSTS"
    raw = env.get(name, "localhost,127.0.0.1,[::1]")
    hosts = tuple(h.strip() for h in raw.split(",") if h.strip())
    if not hosts:
        raise ConfigError(name, "must name at least one host (comma-separated), e.g. localhost,hivemind.example.com")
    for host in hosts:
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(bare)
            continue
        except ValueError:
            pass
        if not _HOSTNAME.match(host):
            raise ConfigError(name, f"{host!r} is not a host name, an IP address or '*'")
    return hosts


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    name = "HIVEMIND_CSRF_TRUSTED_ORIGINS"
    origins = tuple(o.strip() for o in env.get(name, "").split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(name, f"{origin!r} is not an origin like https://hivemind.example.com")
    return origins


def _bind(env: Mapping[str, str]) -> str:
    name = "HIVEMIND_WEB_BIND"
    raw = env.get(name, "").strip() or "127.0.0.1:8000"
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(name, f"expected HOST:PORT with a port from 1 to 65535, got {raw!r}")
    return raw


def _var_dir(env: Mapping[str, str]) -> Path:
    name = "HIVEMIND_VAR_DIR"
    raw = env.get(name, "").strip()
    path = Path(raw) if raw else BASE_DIR / "var"
    if not path.is_absolute():
        raise ConfigError(name, f"must be an absolute path, got {raw!r}")
    if path.exists() and not path.is_dir():
        raise ConfigError(name, f"{path} exists and is not a directory")
    return path


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read and validate every HIVEMIND_* variable; raise ConfigError on the first bad one."""
    env = os.environ if env is None else env
    var_dir = _var_dir(env)
    soft = _int(env, "HIVEMIND_STEP_SOFT_TIME_LIMIT", 1800, low=1, high=86400)
    hard = _int(env, "HIVEMIND_STEP_TIME_LIMIT", 3600, low=2, high=86400)
    if soft >= hard:
        raise ConfigError(
            "HIVEMIND_STEP_SOFT_TIME_LIMIT", f"must be below HIVEMIND_STEP_TIME_LIMIT ({hard}), got {soft}"
        )
    level = env.get("HIVEMIND_LOG_LEVEL", "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError("HIVEMIND_LOG_LEVEL", f"expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return Config(
        var_dir=var_dir,
        database_url=_database_url(env, var_dir),
        redis_url=_redis_url(env),
        docker_host=_docker_host(env, var_dir),
        node_name=_node_name(env),
        secret_key=_secret_key(env, var_dir),
        debug=_bool(env, "HIVEMIND_DEBUG", False),
        allowed_hosts=_hosts(env),
        csrf_trusted_origins=_origins(env),
        web_bind=_bind(env),
        # One web process per core: a request is mostly Python, and one process uses one core.
        web_workers=_int(env, "HIVEMIND_WEB_WORKERS", len(os.sched_getaffinity(0)), low=1, high=64),
        web_threads=_int(env, "HIVEMIND_WEB_THREADS", 8, low=1, high=256),
        step_soft_time_limit=soft,
        step_time_limit=hard,
        log_level=level,
        otel_enabled=_bool(env, "HIVEMIND_OTEL_ENABLED", False),
        reconcile_interval=_int(env, "HIVEMIND_RECONCILE_INTERVAL", 15, low=1, high=3600),
        step_heartbeat=_int(env, "HIVEMIND_STEP_HEARTBEAT", 5, low=1, high=300),
        worker_concurrency=_int(env, "HIVEMIND_WORKER_CONCURRENCY", 4, low=1, high=64),
        node_address=_node_address(env),
        node_netns=_node_netns(env),
        dns_address=_dns_address(env),
        pools=_pools(env),
        node_labels=_node_labels(env),
        node_heartbeat=_int(env, "HIVEMIND_NODE_HEARTBEAT", 5, low=1, high=300),
        sample_interval=_int(env, "HIVEMIND_SAMPLE_INTERVAL", 15, low=0, high=3600),
        # At least the hour the dashboard's charts show, at most a week: samples are for charts, not history.
        sample_retention=_int(env, "HIVEMIND_SAMPLE_RETENTION", 7200, low=3600, high=7 * 86400),
        # The rolled-up history: the day charts and anomaly baselines read, bounded.
        rollup_retention_1m=_int(env, "HIVEMIND_ROLLUP_RETENTION_1M", 2 * 86400, low=3600, high=30 * 86400),
        rollup_retention_10m=_int(env, "HIVEMIND_ROLLUP_RETENTION_10M", 30 * 86400, low=86400, high=400 * 86400),
        storage_pool=_storage_pool(env),
        storage_dir=_storage_dir(env),
        storage_size=_storage_size(env),
        crypt_scryptn=_int(env, "HIVEMIND_CRYPT_SCRYPTN", 16, low=10, high=28),
        master_key=_master_key(env),
        data_address=_data_address(env),
        data_port=_int(env, "HIVEMIND_DATA_PORT", 7480, low=0, high=65535),
        csi_socket=_csi_socket(env),
        replication_rate=_int(env, "HIVEMIND_REPLICATION_RATE", 0, low=0, high=1 << 40),
        notifier_attempts=_int(env, "HIVEMIND_NOTIFIER_ATTEMPTS", 6, low=1, high=20),
        notifier_backoff=_int(env, "HIVEMIND_NOTIFIER_BACKOFF", 30, low=1, high=3600),
        notifier_timeout=_int(env, "HIVEMIND_NOTIFIER_TIMEOUT", 10, low=1, high=120),
        alert_interval=_int(env, "HIVEMIND_ALERT_INTERVAL", 15, low=1, high=3600),
        backup_dir=_backup_dir(env),
        backup_endpoints=_backup_endpoints(env),
        otel_endpoint=_otel_endpoint(env),
        otel_service_name=_otel_service_name(env),
        otel_sample_ratio=_otel_sample_ratio(env),
        otel_headers=_otel_headers(env),
        log_format=_log_format(env),
    )


def exit_on_config_error(exc: ConfigError) -> None:
    """Print the one-line message entry points show instead of a traceback, then exit."""
    raise SystemExit(f"hivemind: configuration error: {exc}")
