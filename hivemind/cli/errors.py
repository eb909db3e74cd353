"""Exit codes and the one error type every command raises.

Scripts branch on the exit code, so each kind of failure has its own number and the
HTTP status an API answer carried decides which one it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_AUTH = 4
EXIT_PERMISSION = 5
EXIT_NOT_FOUND = 6
EXIT_CONFLICT = 7

# What `hivemind --help` says each exit code means; the README's table says the same.
EXIT_MEANINGS = {
    EXIT_OK: "ok",
    EXIT_ERROR: "error (a bad value, a failed workflow)",
    EXIT_USAGE: "usage",
    EXIT_CONNECTION: "server unreachable",
    EXIT_AUTH: "not authenticated",
    EXIT_PERMISSION: "permission denied",
    EXIT_NOT_FOUND: "not found",
    EXIT_CONFLICT: "conflict (quota exceeded, name taken, not empty)",
}

EXIT_FOR_STATUS = {401: EXIT_AUTH, 403: EXIT_PERMISSION, 404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT}


class CliError(click.ClickException):
    """A failure shown as one line, `error: <message>`, on stderr."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class ApiError(CliError):
    """The API answered with an error status; `status` is that HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, EXIT_FOR_STATUS.get(status, EXIT_ERROR))
        self.status = status


def usage_error(message: str) -> CliError:
    return CliError(message, EXIT_USAGE)


def not_found(what: str, tenant: str | None = None) -> CliError:
    """`app web not found in tenant acme`: what was looked for, and where."""
    return CliError(f"{what} not found" + (f" in tenant {tenant}" if tenant else ""), EXIT_NOT_FOUND)


@contextmanager
def not_found_as(what: str, *, tenant: str | None = None) -> Iterator[None]:
    """Turn the API's 404 (`Not found.`) into one naming what was looked for and where.

    With `tenant` (an object looked up inside a tenant, sent as X-Hivemind-Tenant), a 404
    about the tenant itself says the tenant is missing, not the object.
    """
    try:
        yield
    except ApiError as exc:
        if exc.status != 404:
            raise
        if tenant and exc.message.startswith("tenant "):
            raise not_found(f"tenant {tenant}") from exc
        raise not_found(what, tenant) from exc
