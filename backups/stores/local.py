"""A backup location in a directory of the machine that writes it (a disk, a mounted share)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from .base import Conflict, NotFound, Store, StoreError, check_key


class LocalStore(Store):
    kind = "local"

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)

    def describe(self) -> str:
        return f"local:{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _fail(self, what: str, exc: OSError) -> StoreError:
        return StoreError(f"{self.describe()}: {what} failed: {exc.strerror or exc} (errno {exc.errno})")

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        path = self._path(key)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if create_only:
                try:
                    os.link(temporary, path)  # atomic: fails when the key exists
                except FileExistsError:
                    raise Conflict(f"{self.describe()}: {key} exists") from None
            else:
                os.replace(temporary, path)
        except OSError as exc:
            raise self._fail(f"writing {key}", exc) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.describe()}: no object {key}") from None
        except OSError as exc:
            raise self._fail(f"reading {key}", exc) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as source:
                source.seek(offset)
                return source.read(length)
        except FileNotFoundError:
            raise NotFound(f"{self.describe()}: no object {key}") from None
        except OSError as exc:
            raise self._fail(f"reading {key}", exc) from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"{self.describe()}: no object {key}") from None
        except OSError as exc:
            raise self._fail(f"reading {key}", exc) from None

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        if not self.root.is_dir():
            raise StoreError(f"{self.describe()}: the directory does not exist")
        found = []
        for directory, subdirectories, files in os.walk(self.root):
            subdirectories.sort()
            relative = Path(directory).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith("."):
                    continue  # a put in progress
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        found.append((key, (Path(directory) / name).stat().st_size))
        yield from sorted(found)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail(f"deleting {key}", exc) from None

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreError(f"{self.describe()}: the directory does not exist")
        super().check()
