"""The kinds of backup location: what each one's configuration and secrets are, checked where
they enter (the API, the CLI, a restore's location document), and how to open one.

    validate(kind, config, secrets) -> (config, secrets)   cleaned; StoreConfigError names the field
    open_store(kind, config, secrets) -> Store

`config` is what may be shown (path, bucket, endpoint, prefix, region); `secrets` what never is
(access keys, account keys, service-account JSON): the caller seals them at rest.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from .base import Store
from .local import LocalStore


class StoreConfigError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _only(kind: str, given: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise StoreConfigError(what, f"{kind} locations take no {', '.join(unknown)} (known: {known})")


def _validate_local(config: dict, secrets: dict) -> tuple[dict, dict]:
    _only("local", config, {"path"}, "config")
    _only("local", secrets, set(), "secrets")
    path = config.get("path")
    if not isinstance(path, str) or not path.strip():
        raise StoreConfigError("path", "a local location needs an absolute directory path")
    if not path.startswith("/") or ".." in PurePosixPath(path).parts or "\x00" in path or len(path) > 1024:
        raise StoreConfigError("path", f"must be an absolute path without '..' (got {path!r})")
    return {"path": str(PurePosixPath(path))}, {}


VALIDATORS = {"local": _validate_local}
OPENERS = {"local": lambda config, secrets: LocalStore(config["path"])}
KINDS = tuple(VALIDATORS)


def validate(kind: str, config: dict | None, secrets: dict | None) -> tuple[dict, dict]:
    if kind not in VALIDATORS:
        raise StoreConfigError("kind", f"unknown location kind {kind!r} (known: {', '.join(KINDS)})")
    config = {} if config is None else config
    secrets = {} if secrets is None else secrets
    if not isinstance(config, dict):
        raise StoreConfigError("config", "must be an object")
    if not isinstance(secrets, dict):
        raise StoreConfigError("secrets", "must be an object")
    return VALIDATORS[kind](config, secrets)


def open_store(kind: str, config: dict, secrets: dict) -> Store:
    config, secrets = validate(kind, config, secrets)
    return OPENERS[kind](config, secrets)
