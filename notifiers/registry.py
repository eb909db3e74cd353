"""The notifier kinds, one registry (ARCHITECTURE, "Registries of plug-ins").

A kind is one module in notifiers/kinds/ that registers a `NotifierKind` subclass here under
the name `Notifier.kind` stores. It declares its settings (which are secret: those are sealed
with the tenant's keys and never returned), checks them, and sends one notification:

    send(config, secrets, notification, timeout=...) -> str    what the peer answered

raising `DeliveryError` with the peer's answer when it did not take it. The shared contract
suite (tests/notifiers/test_contract.py) runs against every registered kind.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from rest_framework.exceptions import ValidationError

from hivemind.core import limits

MAX_VALUE = 2048  # characters of one setting
MAX_ADDRESSES = 50  # recipients of one email notifier
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


class DeliveryError(Exception):
    """A notification the peer did not take. `setting` names the setting to blame when the
    peer could not be reached or refused the credentials (the `test` action's 400 names it);
    otherwise the peer answered with an error of its own (`answered`; the action's 502)."""

    def __init__(self, message: str, *, setting: str | None = None, answered: bool = False):
        super().__init__(message)
        self.message, self.setting, self.answered = message, setting, answered


@dataclass(frozen=True)
class Setting:
    """One setting of a kind. `type`: text, url, host, port, email, emails, choice, bool or pem."""

    name: str
    help: str
    type: str = "text"
    required: bool = False
    secret: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()

    def clean(self, value):
        """The value as stored; ValueError with the reason when it is not one."""
        if self.type == "port":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise ValueError(f"expected a port number from 1 to 65535, got {_show(value)}")
            return value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {_show(value)}")
            return value
        if self.type == "emails":
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, list) or not value:
                raise ValueError("expected a list of email addresses (at least one)")
            if len(value) > MAX_ADDRESSES:
                raise ValueError(f"has {len(value)} addresses; at most {MAX_ADDRESSES}")
            return [_email(item) for item in value]
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_show(value)}")
        if len(value) > MAX_VALUE:
            raise ValueError(f"is {len(value)} characters long; at most {MAX_VALUE}")
        bad = limits.control_character(value, multiline=self.type == "pem")
        if bad:
            raise ValueError(f"holds the control character {bad}")
        if not value:
            raise ValueError("may not be empty")
        if self.type == "url":
            return check_url(value)
        if self.type == "host":
            return _host(value)
        if self.type == "email":
            return _email(value)
        if self.type == "pem" and "-----BEGIN CERTIFICATE-----" not in value:
            raise ValueError("expected a PEM certificate (-----BEGIN CERTIFICATE----- ...)")
        if self.type == "choice" and value not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
        return value


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 70 else text[:67] + "..."


def _email(value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an email address, got {_show(value)}")
    try:
        validate_email(value)
    except DjangoValidationError:
        raise ValueError(f"{_show(value)} is not an email address") from None
    return value


def _host(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    if not _HOST.fullmatch(value):
        raise ValueError(f"expected a host name or an IP address, got {_show(value)}")
    return value


def check_url(value: str) -> str:
    """An http or https URL with a host (other schemes are refused: file:, gopher:, ...)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as exc:
        raise ValueError(f"is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise ValueError("expected a URL with a host, e.g. https://hooks.example.com/alerts")
    if any(ch.isspace() for ch in value):
        raise ValueError("may not hold spaces")
    return value


class NotifierKind:
    """The base of every kind: settings, their checks, and `send`."""

    name: ClassVar[str]
    description: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]]

    @classmethod
    def setting(cls, name: str) -> Setting | None:
        return next((s for s in cls.settings if s.name == name), None)

    @classmethod
    def check(cls, config: dict, secrets: dict) -> dict[str, str]:
        """Checks across settings once each is valid on its own: {setting: problem}."""
        return {}

    @classmethod
    def send(cls, config: dict, secrets: dict, notification: dict, *, timeout: float) -> str:
        raise NotImplementedError


KINDS: dict[str, type[NotifierKind]] = {}


def register(kind: type[NotifierKind]) -> type[NotifierKind]:
    if kind.name in KINDS:
        raise ValueError(f"notifier kind {kind.name} is registered twice")
    KINDS[kind.name] = kind
    return kind


def names() -> list[str]:
    _load()
    return sorted(KINDS)


def get(name: str) -> type[NotifierKind]:
    _load()
    try:
        return KINDS[name]
    except KeyError:
        raise ValidationError({"kind": [f"expected one of {', '.join(sorted(KINDS))}, got {_show(name)}"]}) from None


def _load() -> None:
    import notifiers.kinds  # noqa: F401 - each kind's module registers itself


def clean(kind_name: str, config, secrets) -> tuple[dict, dict]:
    """The kind's settings, checked: (config, secrets) as stored; a ValidationError naming
    every bad one as {"config": {setting: [problem]}, "secrets": {...}} otherwise (DRF's error,
    which keeps the nesting: the API answers it as it is)."""
    kind = get(kind_name)
    errors: dict[str, dict[str, list[str]]] = {"config": {}, "secrets": {}}
    cleaned: dict[str, dict] = {"config": {}, "secrets": {}}
    for where, given in (("config", config), ("secrets", secrets)):
        if not isinstance(given, Mapping):
            raise ValidationError({where: [f"expected an object of settings, got {_show(given)}"]})
        for key, value in given.items():
            setting = kind.setting(key)
            if setting is None:
                expected = ", ".join(s.name for s in kind.settings if s.secret == (where == "secrets")) or "none"
                errors[where][key] = [f"unknown setting of a {kind.name} notifier; expected {expected}"]
            elif setting.secret != (where == "secrets"):
                other = "secrets" if setting.secret else "config"
                errors[where][key] = [f"belongs in {other}, not in {where}"]
            elif value is None:
                continue  # unset
            else:
                try:
                    cleaned[where][key] = setting.clean(value)
                except ValueError as exc:
                    errors[where][key] = [str(exc)]
    for setting in kind.settings:
        where = "secrets" if setting.secret else "config"
        if setting.name not in cleaned[where] and setting.name not in errors[where]:
            if setting.required:
                errors[where][setting.name] = [f"required: {setting.help}"]
            elif setting.default is not None:
                cleaned[where][setting.name] = setting.default
    if not any(errors.values()):
        for key, problem in kind.check(cleaned["config"], cleaned["secrets"]).items():
            setting = kind.setting(key)
            errors["secrets" if setting and setting.secret else "config"][key] = [problem]
    errors = {where: found for where, found in errors.items() if found}
    if errors:
        raise ValidationError(errors)
    return cleaned["config"], cleaned["secrets"]


def secret_names(kind_name: str) -> list[str]:
    return [s.name for s in get(kind_name).settings if s.secret]
