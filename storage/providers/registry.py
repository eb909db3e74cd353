"""The storage providers, by name (StoragePool.provider): one module each, registered here."""

from __future__ import annotations

from storage.providers.base import Provider

_providers: dict[str, type[Provider]] = {}


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: make a provider known under its `name`."""
    if cls.name in _providers and _providers[cls.name] is not cls:
        raise ValueError(f"storage provider {cls.name!r} is registered twice")
    _providers[cls.name] = cls
    return cls


def _load() -> None:
    from storage.providers import btrfs, local, nfs, rbd  # noqa: F401 - they register themselves


def get(name: str) -> type[Provider]:
    _load()
    try:
        return _providers[name]
    except KeyError:
        raise LookupError(f"unknown storage provider {name!r}; known: {', '.join(sorted(_providers))}") from None


def names() -> list[str]:
    _load()
    return sorted(_providers)


def instance(name: str, root, options: dict | None = None) -> Provider:
    return get(name)(root, options)
