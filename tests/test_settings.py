"""Every HIVEMIND_* value is validated at start-up with one line naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hivemind.config import ConfigError, load_config
from tests.conftest import REPO


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"HIVEMIND_VAR_DIR": str(tmp_path / "var")}


def test_defaults(env, tmp_path):
    config = load_config(env)
    assert config.database_url == f"sqlite:///{tmp_path / 'var' / 'hivemind.sqlite3'}"
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.debug is False
    assert config.allowed_hosts == ("localhost", "127.0.0.1", "[::1]")
    assert config.step_soft_time_limit < config.step_time_limit
    assert config.web_bind == "127.0.0.1:8000"


def test_secret_key_is_generated_once_private_and_kept(env, tmp_path):
    first = load_config(env).secret_key
    key_file = tmp_path / "var" / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(first) >= 32
    assert load_config(env).secret_key == first


def test_valid_values_are_taken(env):
    env.update(
        HIVEMIND_DATABASE_URL="postgres://hm:pw@db.example.com:5433/hivemind",
        HIVEMIND_REDIS_URL="redis://10.0.0.2:6380/3",
        HIVEMIND_DOCKER_HOST="tcp://10.0.0.5:2375",
        HIVEMIND_NODE_NAME="edge-01",
        HIVEMIND_SECRET_KEY="x" * 40,
        HIVEMIND_DEBUG="yes",
        HIVEMIND_ALLOWED_HOSTS="hivemind.example.com, 10.0.0.1,[fd00::1],.example.org",
        HIVEMIND_WEB_BIND="0.0.0.0:9000",
        HIVEMIND_LOG_LEVEL="debug",
        HIVEMIND_DNS_ADDRESS="off",
        HIVEMIND_IPV4_POOL="10.200.0.0/16",
    )
    config = load_config(env)
    assert config.dns_address == ""
    assert config.pools == (("HIVEMIND_IPV4_POOL", "10.200.0.0/16"),)
    assert config.node_name == "edge-01"
    assert config.debug is True
    assert config.allowed_hosts == ("hivemind.example.com", "10.0.0.1", "[fd00::1]", ".example.org")
    assert config.log_level == "DEBUG"
    assert config.backup_endpoints == ("private",)
    env["HIVEMIND_BACKUP_ENDPOINTS"] = "10.1.0.0/16, fd00:1::/48"
    assert load_config(env).backup_endpoints == ("10.1.0.0/16", "fd00:1::/48")
    assert config.csi_socket == ""  # no CSI endpoint unless asked
    env["HIVEMIND_CSI_SOCKET"] = "/var/lib/kubelet/plugins/csi.hivemind.io/csi.sock"
    assert load_config(env).csi_socket == "/var/lib/kubelet/plugins/csi.hivemind.io/csi.sock"


BAD_VALUES = [
    ("HIVEMIND_DATABASE_URL", "mysql://root@127.0.0.1/hm", "unsupported scheme 'mysql'"),
    ("HIVEMIND_DATABASE_URL", "postgres:///hivemind", "needs a host"),
    ("HIVEMIND_DATABASE_URL", "postgres://root@127.0.0.1:5432", "needs a database name"),
    ("HIVEMIND_DATABASE_URL", "postgres://root@127.0.0.1:99999/hm", "invalid port"),
    ("HIVEMIND_DATABASE_URL", "sqlite://", "needs a file path"),
    ("HIVEMIND_REDIS_URL", "amqp://guest@127.0.0.1//", "unsupported scheme 'amqp'"),
    ("HIVEMIND_REDIS_URL", "redis://127.0.0.1:6379/42", "database number must be 0-15"),
    ("HIVEMIND_REDIS_URL", "redis://:6379/0", "needs a host"),
    ("HIVEMIND_DOCKER_HOST", "ssh://node1", "unsupported scheme 'ssh'"),
    ("HIVEMIND_DOCKER_HOST", "tcp://:2375", "needs a host"),
    ("HIVEMIND_NODE_NAME", "Edge_01", "expected a DNS label"),
    ("HIVEMIND_SECRET_KEY", "short", "at least 32 characters"),
    ("HIVEMIND_DEBUG", "maybe", "expected true or false"),
    ("HIVEMIND_ALLOWED_HOSTS", " , ", "at least one host"),
    ("HIVEMIND_ALLOWED_HOSTS", "good.example.com,bad host", "'bad host' is not a host name"),
    ("HIVEMIND_CSRF_TRUSTED_ORIGINS", "hivemind.example.com", "is not an origin"),
    ("HIVEMIND_WEB_BIND", "8000", "expected HOST:PORT"),
    ("HIVEMIND_WEB_BIND", "127.0.0.1:70000", "expected HOST:PORT"),
    ("HIVEMIND_WEB_THREADS", "many", "expected a whole number"),
    ("HIVEMIND_WEB_THREADS", "0", "from 1 to 256"),
    ("HIVEMIND_STEP_TIME_LIMIT", "-5", "from 2 to 86400"),
    ("HIVEMIND_STEP_SOFT_TIME_LIMIT", "4000", "must be below HIVEMIND_STEP_TIME_LIMIT"),
    ("HIVEMIND_LOG_LEVEL", "loud", "expected one of DEBUG, INFO, WARNING, ERROR"),
    ("HIVEMIND_VAR_DIR", "relative/var", "must be an absolute path"),
    ("HIVEMIND_OTEL_ENABLED", "2", "expected true or false"),
    ("HIVEMIND_OTEL_ENDPOINT", "grpc://collector:4317", "unsupported scheme 'grpc'; use http(s)://HOST:PORT"),
    ("HIVEMIND_OTEL_ENDPOINT", "collector:4318", "unsupported scheme 'collector'"),
    ("HIVEMIND_OTEL_ENDPOINT", "http://:4318", "needs a host"),
    ("HIVEMIND_OTEL_ENDPOINT", "http://collector:99999", "invalid port"),
    ("HIVEMIND_OTEL_ENDPOINT", "https://user:pw@collector:4318", "put credentials in HIVEMIND_OTEL_HEADERS"),
    ("HIVEMIND_OTEL_ENDPOINT", "http://collector:4318/v1/traces?x=1", "no query or fragment"),
    ("HIVEMIND_OTEL_SERVICE_NAME", "hive mind", "expected 1 to 63 letters, digits"),
    ("HIVEMIND_OTEL_SERVICE_NAME", "x" * 64, "expected 1 to 63 letters, digits"),
    ("HIVEMIND_OTEL_SAMPLE_RATIO", "half", "expected a number from 0 to 1"),
    ("HIVEMIND_OTEL_SAMPLE_RATIO", "1.5", "expected a number from 0 to 1"),
    ("HIVEMIND_OTEL_SAMPLE_RATIO", "nan", "expected a number from 0 to 1"),
    ("HIVEMIND_OTEL_SAMPLE_RATIO", "-0.1", "expected a number from 0 to 1"),
    ("HIVEMIND_OTEL_HEADERS", "authorization", "entry 1: expected NAME=VALUE pairs"),
    ("HIVEMIND_OTEL_HEADERS", "a=1,bad header=2", "entry 2: 'bad header' is not an HTTP header name"),
    ("HIVEMIND_OTEL_HEADERS", "x-token=", "header x-token: expected a value of printable characters"),
    ("HIVEMIND_OTEL_HEADERS", "x-token=a%0Db", "header x-token: expected a value of printable characters"),
    ("HIVEMIND_LOG_FORMAT", "xml", "expected one of text, json, got 'xml'"),
    ("HIVEMIND_RECONCILE_INTERVAL", "0", "from 1 to 3600"),
    ("HIVEMIND_STEP_HEARTBEAT", "soon", "expected a whole number"),
    ("HIVEMIND_WORKER_CONCURRENCY", "100", "from 1 to 64"),
    ("HIVEMIND_NODE_ADDRESS", "not an address", "expected an IP address or a host name"),
    ("HIVEMIND_NODE_LABELS", "zone", "expected KEY=VALUE pairs separated by commas, got 'zone'"),
    ("HIVEMIND_NODE_LABELS", "Zone=eu-1", "label key 'Zone' must be"),
    ("HIVEMIND_NODE_LABELS", "zone=eu 1", "label 'zone': value 'eu 1' must be"),
    ("HIVEMIND_NODE_HEARTBEAT", "0", "from 1 to 300"),
    ("HIVEMIND_NODE_NETNS", "../etc", "expected the name of a network namespace"),
    ("HIVEMIND_NODE_NETNS", "no-such-namespace-here", "no network namespace 'no-such-namespace-here'"),
    ("HIVEMIND_DNS_ADDRESS", "dns.example.com", "expected an IP address for the node DNS server, or off"),
    ("HIVEMIND_DNS_ADDRESS", "127.0.0.1", "expected a unicast address containers can route to"),
    ("HIVEMIND_IPV4_POOL", "10.128.0.1/12", "expected an IPv4 prefix such as"),
    ("HIVEMIND_IPV6_POOL", "10.128.0.0/12", "expected an IPv6 prefix, got 10.128.0.0/12"),
    ("HIVEMIND_SERVICE_IPV4_POOL", "fd00::/64", "expected an IPv4 prefix, got fd00::/64"),
    ("HIVEMIND_BACKUP_ENDPOINTS", "10.0.0.0/33", "expected private, public or networks such as"),
    ("HIVEMIND_BACKUP_ENDPOINTS", "anywhere", "got 'anywhere'"),
    ("HIVEMIND_CSI_SOCKET", "csi.sock", "expected an absolute path for the CSI unix socket"),
    ("HIVEMIND_CSI_SOCKET", "/run/../csi.sock", "expected an absolute path"),
    ("HIVEMIND_CSI_SOCKET", "/" + "x" * 120, "a unix socket path has at most 107 bytes"),
]


@pytest.mark.parametrize(("variable", "value", "problem"), BAD_VALUES, ids=[f"{v}={x}" for v, x, _ in BAD_VALUES])
def test_bad_value_names_the_variable_and_the_problem(env, variable, value, problem):
    env[variable] = value
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert problem in str(caught.value)


def test_tracing_and_log_settings(env):
    config = load_config(env)
    assert (config.otel_enabled, config.otel_endpoint) == (False, "http://127.0.0.1:4318/v1/traces")
    assert (config.otel_service_name, config.otel_sample_ratio, config.otel_headers) == ("hivemind", 1.0, ())
    assert config.log_format == "text"
    env.update(
        HIVEMIND_OTEL_ENABLED="on",
        HIVEMIND_OTEL_ENDPOINT="https://collector.example.com/",  # a base URL gets the standard path
        HIVEMIND_OTEL_SERVICE_NAME="hivemind-eu_1.prod",
        HIVEMIND_OTEL_SAMPLE_RATIO="0.25",
        HIVEMIND_OTEL_HEADERS="Authorization=Bearer%20abc%3D%3D, x-scope=tenant=a",
        HIVEMIND_LOG_FORMAT="JSON",
    )
    config = load_config(env)
    assert config.otel_enabled is True
    assert config.otel_endpoint == "https://collector.example.com/v1/traces"
    assert config.otel_service_name == "hivemind-eu_1.prod"
    assert config.otel_sample_ratio == 0.25
    assert config.otel_headers == (("authorization", "Bearer abc=="), ("x-scope", "tenant=a"))
    assert "abc" not in repr(config)  # headers carry credentials: never in a repr or a log line
    assert config.log_format == "json"
    custom = load_config({**env, "HIVEMIND_OTEL_ENDPOINT": "http://10.0.0.9:4318/otlp/v1/traces"})
    assert custom.otel_endpoint == "http://10.0.0.9:4318/otlp/v1/traces"  # a full URL is taken as it is


def test_a_bad_header_value_is_never_echoed(env):
    env["HIVEMIND_OTEL_HEADERS"] = "authorization=s3cret%0A"
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert "s3cret" not in str(caught.value)


def test_var_dir_that_is_a_file(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ConfigError, match=r"HIVEMIND_VAR_DIR: .* exists and is not a directory"):
        load_config({"HIVEMIND_VAR_DIR": str(a_file)})


def test_damaged_generated_secret_key(env, tmp_path):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret_key").write_text("tiny\n")
    with pytest.raises(ConfigError, match=r"HIVEMIND_SECRET_KEY: not set, and the generated key .* is damaged"):
        load_config(env)


ENTRY_POINTS = {
    "manage.py": [sys.executable, "manage.py", "check"],
    "wsgi": [sys.executable, "-c", "import hivemind.wsgi"],
    "celery worker": [sys.executable, "-m", "celery", "-A", "hivemind", "worker", "-Q", "control", "--pool", "solo"],
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_points_stop_with_one_line_not_a_traceback(entry, subprocess_env, tmp_path):
    subprocess_env.update(HIVEMIND_VAR_DIR=str(tmp_path), HIVEMIND_REDIS_URL="redis://127.0.0.1:6379/99")
    result = subprocess.run(
        ENTRY_POINTS[entry], cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == (
        "hivemind: configuration error: HIVEMIND_REDIS_URL: the database number must be 0-15, got '99'"
    ), result.stderr
