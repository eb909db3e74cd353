"""An app's spec as users write it, validated into the normal form stored on a revision.

`clean_spec(data)` returns the normal form or raises ValidationError({field: message})
with the field named the way the user wrote it (`ports[1].host_port`, `resources.cpu`).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from typing import Any

from django.core.exceptions import ValidationError

from hivemind.core import limits
from hivemind.core.names import is_dns_label
from hivemind.core.units import QuantityError, parse_bytes, parse_count, parse_cpu, parse_duration
from hivemind.nodes.labels import LabelError, check_key, check_value

# The Docker reference grammar (distribution/reference), without the optional scheme.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
IMAGE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?$"
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESTART_POLICIES = ("always", "on-failure", "unless-stopped", "no")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
NODE_NAME_LABEL = "hivemind.io/node"  # every node carries its own name under this label
DEFAULT_CPU, DEFAULT_MEMORY = "100m", "64Mi"  # a replica's request when its spec names none
SPEC_FIELDS = {
    "image", "command", "args", "env", "ports", "resources", "health", "restart", "placement", "update", "networks",
    "labels", "volumes", "volume_templates",
}  # fmt: skip
MAX_NETWORKS = 8  # networks one replica joins (each is a network interface in the container)


def _fail(field: str, message: str):
    raise ValidationError({field: message})


def _seconds(field: str, value, default: float, *, low: float = 0, high: float = 3600) -> float:
    if value is None:
        return default
    try:
        return parse_duration(value, low=low, high=high)
    except QuantityError as exc:
        _fail(field, str(exc))


def _int(field: str, value, default: int | None, *, low: int, high: int) -> int | None:
    if value is None:
        return default
    try:
        number = parse_count(value, high=10**10)
    except QuantityError:
        _fail(field, f"expected a whole number from {low} to {high}, got {str(value)[:40]!r}")
    if not low <= number <= high:
        _fail(field, f"expected {low} to {high}, got {number}")
    return number


def _words(field: str, value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        limits.check_text(field, value, limits.MAX_COMMAND_LENGTH)
        try:
            words = shlex.split(value)
        except ValueError as exc:
            _fail(field, f"cannot split into words: {exc}")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        words = list(value)
    else:
        _fail(field, "expected a list of strings or one command line")
    limits.check_count(field, words, limits.MAX_COMMAND_WORDS, "words")
    for i, word in enumerate(words):
        limits.check_text(f"{field}[{i}]", word, limits.MAX_COMMAND_LENGTH)
    return words


def clean_image(value) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail("image", "required: an image reference such as nginx:1.27 or registry.example.com/team/api:2.1")
    image = value.strip()
    if len(image) > 255 or not IMAGE.match(image):
        _fail("image", f"{image!r} is not an image reference (e.g. nginx:1.27, ghcr.io/org/app@sha256:…)")
    return image


def clean_env(value) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):  # ["KEY=value", ...] as the CLI sends them
        pairs = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                _fail("env", f"expected KEY=value, got {item!r}")
            key, _, val = item.partition("=")
            pairs[key] = val
        value = pairs
    if not isinstance(value, dict):
        _fail("env", "expected an object of NAME: value")
    limits.check_count("env", value, limits.MAX_ENV_VARS, "variables")
    for key, val in value.items():
        if len(key) > limits.MAX_ENV_NAME or not ENV_NAME.match(key):
            shown = key if len(key) <= 40 else key[:40] + "…"
            _fail(
                f"env.{shown}",
                f"a variable name is letters, digits and _, not starting with a digit, "
                f"at most {limits.MAX_ENV_NAME} characters",
            )
        if isinstance(val, float) and not math.isfinite(val):
            _fail(f"env.{key}", "expected a string value")
        if not isinstance(val, str | int | float) or isinstance(val, bool):
            _fail(f"env.{key}", "expected a string value")
        limits.check_text(f"env.{key}", str(val), limits.MAX_ENV_VALUE, multiline=True)
    return {key: str(val) for key, val in value.items()}


def clean_ports(value) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail("ports", "expected a list of {container_port, protocol, host_port, name}")
    limits.check_count("ports", value, limits.MAX_PORTS, "ports")
    ports, seen, published = [], set(), set()
    for i, item in enumerate(value):
        field = f"ports[{i}]"
        if isinstance(item, str):  # "8080", "8080/udp", "80:8080" (host:container)
            text, _, protocol = item.partition("/")
            host, _, container = text.rpartition(":")
            item = {"container_port": container, "protocol": protocol or "tcp", "host_port": host or None}
        if not isinstance(item, dict) or set(item) - {"container_port", "protocol", "host_port", "name"}:
            _fail(field, "expected {container_port, protocol, host_port, name} or a string like 80:8080/tcp")
        name = item.get("name")  # a named port gets an SRV record: _<name>._<protocol>.<app>.<tenant>.hivemind.
        if name is not None and (not isinstance(name, str) or not is_dns_label(name) or len(name) > 15):
            _fail(f"{field}.name", f"expected a DNS label of at most 15 characters, got {str(name)[:70]!r}")
        port = _int(f"{field}.container_port", item.get("container_port"), None, low=1, high=65535)
        if port is None:
            _fail(f"{field}.container_port", "required")
        protocol = item.get("protocol")
        protocol = "tcp" if protocol is None else protocol.lower() if isinstance(protocol, str) else protocol
        if protocol not in ("tcp", "udp"):
            _fail(f"{field}.protocol", f"expected tcp or udp, got {protocol!r}")
        host_port = _int(f"{field}.host_port", item.get("host_port"), None, low=1, high=65535)
        if (port, protocol) in seen:
            _fail(field, f"container port {port}/{protocol} is listed twice")
        if host_port is not None and (host_port, protocol) in published:
            _fail(f"{field}.host_port", f"host port {host_port}/{protocol} is published twice")
        seen.add((port, protocol))
        if host_port is not None:
            published.add((host_port, protocol))
        ports.append({"container_port": port, "protocol": protocol, "host_port": host_port, "name": name})
    return ports


def _quantity(field: str, value, parse, default=None) -> int | None:
    """A quantity, or `default` when the field is absent or null; "" is an error, not "none"."""
    if value is None:
        value = default
        if value is None:
            return None
    try:
        return parse(value)
    except QuantityError as exc:
        _fail(field, str(exc))


def clean_resources(value) -> dict:
    value = {} if value is None else value
    if not isinstance(value, dict) or set(value) - {"cpu", "memory", "cpu_limit", "memory_limit"}:
        _fail("resources", "expected {cpu, memory, cpu_limit, memory_limit}, e.g. {cpu: 250m, memory: 128Mi}")
    cpu = _quantity("resources.cpu", value.get("cpu"), parse_cpu, DEFAULT_CPU)
    memory = _quantity("resources.memory", value.get("memory"), parse_bytes, DEFAULT_MEMORY)
    cpu_limit = _quantity("resources.cpu_limit", value.get("cpu_limit"), parse_cpu)
    memory_limit = _quantity("resources.memory_limit", value.get("memory_limit"), parse_bytes)
    if cpu_limit is not None and cpu_limit < cpu:
        _fail("resources.cpu_limit", f"the limit ({cpu_limit}m) is below the request ({cpu}m)")
    if memory_limit is not None and memory_limit < memory:
        _fail("resources.memory_limit", "the limit is below the request")
    if memory_limit is not None and memory_limit < 6 * 2**20:
        _fail("resources.memory_limit", "Docker needs at least 6Mi")
    return {"cpu": cpu, "memory": memory, "cpu_limit": cpu_limit, "memory_limit": memory_limit}


def clean_health(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _fail("health", "expected {type: http|tcp|cmd, ...}")
    kind = value.get("type") or ("cmd" if "command" in value else "http" if "path" in value else "tcp")
    common = {
        "interval": _seconds("health.interval", value.get("interval"), 10, low=0.5),
        "timeout": _seconds("health.timeout", value.get("timeout"), 5, low=0.5),
        "retries": _int("health.retries", value.get("retries"), 3, low=1, high=100),
        "start_period": _seconds("health.start_period", value.get("start_period"), 0),
    }
    allowed = {"type", "interval", "timeout", "retries", "start_period"}
    if kind == "http":
        allowed |= {"path", "port"}
        path = value.get("path") or "/"
        if isinstance(path, str):
            limits.check_text("health.path", path, limits.MAX_TEXT)
        if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in " '\"\\\n"):
            _fail("health.path", f"expected a URL path starting with /, got {path!r}")
        check = {"type": "http", "path": path, "port": _int("health.port", value.get("port"), None, low=1, high=65535)}
        if check["port"] is None:
            _fail("health.port", "required for an http health check")
    elif kind == "tcp":
        allowed |= {"port"}
        check = {"type": "tcp", "port": _int("health.port", value.get("port"), None, low=1, high=65535)}
        if check["port"] is None:
            _fail("health.port", "required for a tcp health check")
    elif kind == "cmd":
        allowed |= {"command"}
        command = _words("health.command", value.get("command"))
        if not command:
            _fail("health.command", "required for a cmd health check")
        check = {"type": "cmd", "command": command}
    else:
        _fail("health.type", f"expected http, tcp or cmd, got {kind!r}")
    unknown = set(value) - allowed
    if unknown:
        _fail("health", f"unknown field(s) for a {kind} check: {', '.join(sorted(unknown))}")
    return {**check, **common}


def _clean_term(field: str, term) -> dict:
    if not isinstance(term, dict) or len(term) != 1 or not ({"node_labels", "app"} & set(term)):
        _fail(field, "expected {node_labels: {key: value}} or {app: <app name>}")
    if "app" in term:
        if not is_dns_label(term["app"]):
            _fail(field, f"expected an app name, got {term['app']!r}")
        return {"app": term["app"]}
    return {"node_labels": _clean_labels(f"{field}.node_labels", term["node_labels"])}


def _clean_labels(field: str, value) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        _fail(field, "expected an object of label: value")
    limits.check_count(field, value, limits.MAX_LABELS, "labels")
    for key, val in value.items():
        try:  # node label syntax: a selector no node label can match is an error now, not a pending replica later
            check_value(check_key(key), val)
        except LabelError as exc:
            _fail(field, str(exc))
    return dict(value)


def _clean_affinity(field: str, value) -> dict:
    value = {} if value is None else value
    if not isinstance(value, dict) or set(value) - {"required", "preferred"}:
        _fail(field, "expected {required: [term], preferred: [{weight, term}]}")
    for part in ("required", "preferred"):
        if not isinstance(value.get(part) or [], list):
            _fail(f"{field}.{part}", "expected a list of terms")
        limits.check_count(f"{field}.{part}", value.get(part) or [], limits.MAX_TERMS, "terms")
    required = [_clean_term(f"{field}.required[{i}]", t) for i, t in enumerate(value.get("required") or [])]
    preferred = []
    for i, item in enumerate(value.get("preferred") or []):
        if not isinstance(item, dict) or set(item) != {"weight", "term"}:
            _fail(f"{field}.preferred[{i}]", "expected {weight: 1-100, term: {...}}")
        weight = _int(f"{field}.preferred[{i}].weight", item["weight"], None, low=1, high=100)
        preferred.append({"weight": weight, "term": _clean_term(f"{field}.preferred[{i}].term", item["term"])})
    return {"required": required, "preferred": preferred}


def clean_placement(value, *, known_nodes: set[str] | None = None) -> dict:
    value = {} if value is None else value
    allowed = {"node_selector", "affinity", "anti_affinity", "spread", "tolerations", "strategy"}
    if not isinstance(value, dict) or set(value) - allowed:
        _fail("placement", f"expected an object with {', '.join(sorted(allowed))}")
    selector = _clean_labels("placement.node_selector", value["node_selector"]) if value.get("node_selector") else {}
    if known_nodes is not None and NODE_NAME_LABEL in selector and selector[NODE_NAME_LABEL] not in known_nodes:
        _fail("placement.node_selector", f"no node is named {selector[NODE_NAME_LABEL]!r}")
    affinity = _clean_affinity("placement.affinity", value.get("affinity"))
    anti = _clean_affinity("placement.anti_affinity", value.get("anti_affinity"))
    for term in affinity["required"]:
        if term in anti["required"]:
            _fail("placement.anti_affinity", f"{term} is both required and forbidden: no node can satisfy it")
    for term in affinity["required"]:
        labels = term.get("node_labels", {})
        for key, val in labels.items():
            if key in selector and selector[key] != val:
                _fail("placement.affinity", f"requires {key}={val} but node_selector requires {key}={selector[key]}")
    tolerations = []
    if not isinstance(value.get("tolerations") or [], list):
        _fail("placement.tolerations", "expected a list of {key, operator, value, effect}")
    limits.check_count("placement.tolerations", value.get("tolerations") or [], limits.MAX_LABELS, "tolerations")
    for i, item in enumerate(value.get("tolerations") or []):
        field = f"placement.tolerations[{i}]"
        if not isinstance(item, dict) or set(item) - {"key", "value", "effect", "operator"}:
            _fail(field, "expected {key, operator: Equal|Exists, value, effect}")
        for part in ("key", "value"):
            if item.get(part) is not None and not isinstance(item[part], str):
                _fail(f"{field}.{part}", "expected a string")
            if isinstance(item.get(part), str):
                limits.check_text(f"{field}.{part}", item[part], limits.MAX_TEXT)
        operator = item.get("operator") or ("Exists" if "value" not in item else "Equal")
        if operator not in ("Equal", "Exists"):
            _fail(f"{field}.operator", f"expected Equal or Exists, got {operator!r}")
        if item.get("effect") not in (None, *EFFECTS):
            _fail(f"{field}.effect", f"expected one of {', '.join(EFFECTS)}, got {item.get('effect')!r}")
        if operator == "Equal" and not isinstance(item.get("value"), str):
            _fail(f"{field}.value", "required with operator Equal")
        tolerations.append(
            {"key": item.get("key"), "operator": operator, "value": item.get("value"), "effect": item.get("effect")}
        )
    strategy = value.get("strategy", "spread")
    if strategy not in ("spread", "binpack"):
        _fail("placement.strategy", f"expected spread or binpack, got {strategy!r}")
    spread = value.get("spread", True)
    if not isinstance(spread, bool):
        _fail("placement.spread", "expected true or false")
    return {
        "node_selector": selector,
        "affinity": affinity,
        "anti_affinity": anti,
        "spread": spread,
        "tolerations": tolerations,
        "strategy": strategy,
    }


def clean_update(value) -> dict:
    value = {} if value is None else value
    if not isinstance(value, dict) or set(value) - {"max_surge", "max_unavailable"}:
        _fail("update", "expected {max_surge, max_unavailable}")
    surge = _int("update.max_surge", value.get("max_surge"), 1, low=0, high=100)
    unavailable = _int("update.max_unavailable", value.get("max_unavailable"), 0, low=0, high=100)
    if surge == 0 and unavailable == 0:
        _fail("update", "max_surge and max_unavailable cannot both be 0: the update could never progress")
    return {"max_surge": surge, "max_unavailable": unavailable}


def clean_networks(value) -> list[str]:
    """The tenant networks the replicas join, by name; none named means the tenant's default
    network (whether a name exists in the tenant is the service's to check)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        _fail("networks", "expected a list of network names")
    limits.check_count("networks", value, MAX_NETWORKS, "networks")
    for i, name in enumerate(value):
        if not is_dns_label(name):
            _fail(f"networks[{i}]", f"expected a network name (a DNS label), got {name[:70]!r}")
        if name in value[:i]:
            _fail(f"networks[{i}]", f"{name} is named twice")
    return list(value)


def clean_labels(value) -> dict[str, str]:
    """The app's labels (network policies select apps by them), with the node labels' rules."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail("labels", 'expected an object of label keys and values, e.g. {"tier": "web"}')
    limits.check_count("labels", value, limits.MAX_LABELS, "labels")
    for key, item in value.items():
        try:
            check_key(key)
            if not isinstance(item, str):
                raise LabelError(f"label {key!r}: expected a string value")
            check_value(key, item)
        except LabelError as exc:
            _fail(f"labels.{key}", str(exc))
    return dict(value)


def clean_spec(data: Any, *, known_nodes: set[str] | None = None) -> dict:
    from storage.mounts import clean_volume_templates, clean_volumes

    if not isinstance(data, dict):
        _fail("spec", "expected an object")
    size = len(json.dumps(data, default=str))
    if size > limits.MAX_SPEC_BYTES:
        _fail("spec", f"is {size} bytes as JSON; at most {limits.MAX_SPEC_BYTES} (docs/limits.md)")
    unknown = set(data) - SPEC_FIELDS
    if unknown:
        _fail("spec", f"unknown field(s): {', '.join(sorted(unknown))}")
    restart = data.get("restart")
    restart = "always" if restart is None else restart
    if restart not in RESTART_POLICIES:
        _fail("restart", f"expected one of {', '.join(RESTART_POLICIES)}, got {restart!r}")
    return {
        "image": clean_image(data.get("image")),
        "command": _words("command", data.get("command")),
        "args": _words("args", data.get("args")),
        "env": clean_env(data.get("env")),
        "ports": clean_ports(data.get("ports")),
        "resources": clean_resources(data.get("resources")),
        "health": clean_health(data.get("health")),
        "restart": restart,
        "placement": clean_placement(data.get("placement"), known_nodes=known_nodes),
        "update": clean_update(data.get("update")),
        "networks": clean_networks(data.get("networks")),
        "labels": clean_labels(data.get("labels")),
        "volumes": (mounts := clean_volumes(data.get("volumes"))),
        "volume_templates": clean_volume_templates(data.get("volume_templates"), mounts),
    }
