"""The client's config file: named contexts, each a server, a token and a tenant.

    current-context: hivemind.example.com
    contexts:
      hivemind.example.com: {server: https://hivemind.example.com, token: ..., tenant: acme}

It holds API tokens, so it is only ever written with mode 0600, in a directory made 0700.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hivemind.cli.errors import CliError


@dataclass
class Context:
    name: str
    server: str
    token: str
    tenant: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"server": self.server, "token": self.token, "tenant": self.tenant}


@dataclass
class Config:
    path: Path
    current_context: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)

    def current(self) -> Context | None:
        return self.contexts.get(self.current_context) if self.current_context else None


def config_path() -> Path:
    override = os.environ.get("HIVEMIND_CONFIG", "").strip()
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or "~/.config"
    return Path(base).expanduser() / "hivemind" / "config.yaml"


def _bad(path: Path, problem: str) -> CliError:
    return CliError(f"{path}: {problem} (fix or delete the file, then run `hivemind login`)")


def _text(path: Path, value: object, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        expected = "a string or null" if optional else "a non-empty string"
        raise _bad(path, f"{where} must be {expected}, got {value!r}")
    return value


def load_config(path: Path | None = None) -> Config:
    """Read the file; a missing one is an empty config, a malformed one a clear error."""
    path = path or config_path()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path=path)
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _bad(path, f"not valid YAML{where}: {problem}") from exc
    if data is None:
        return Config(path=path)
    if not isinstance(data, dict):
        raise _bad(path, f"expected a mapping with 'current-context' and 'contexts', got {type(data).__name__}")
    unknown = sorted(set(data) - {"current-context", "contexts"})
    if unknown:
        raise _bad(path, f"unknown key {unknown[0]!r} (expected 'current-context' and 'contexts')")
    contexts_raw = data.get("contexts") or {}
    if not isinstance(contexts_raw, dict):
        raise _bad(path, f"'contexts' must be a mapping of name to {{server, token, tenant}}, got {contexts_raw!r}")
    contexts: dict[str, Context] = {}
    for name, entry in contexts_raw.items():
        if not isinstance(entry, dict):
            raise _bad(path, f"context {name!r} must be a mapping with server, token and tenant")
        contexts[str(name)] = Context(
            name=str(name),
            server=_text(path, entry.get("server"), f"contexts.{name}.server"),
            token=_text(path, entry.get("token"), f"contexts.{name}.token"),
            tenant=_text(path, entry.get("tenant"), f"contexts.{name}.tenant", optional=True),
        )
    current = data.get("current-context")
    if current is not None:
        current = str(current)
        if current not in contexts:
            raise _bad(path, f"current-context {current!r} is not one of the contexts")
    return Config(path=path, current_context=current, contexts=contexts)


def save_config(config: Config) -> None:
    """Write atomically: a new 0600 file beside the old one, then rename over it."""
    path = config.path
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)  # mkdir's mode is narrowed by the umask, never widened
    body = {
        "current-context": config.current_context,
        "contexts": {name: ctx.as_dict() for name, ctx in config.contexts.items()},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(body, fh, sort_keys=False, default_flow_style=False)
        os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a leftover file of the same name
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"{path}: cannot write: {exc.strerror}") from exc
