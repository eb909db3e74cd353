"""Exit codes and the one error type every command raises.

Scripts branch on the exit code, so each kind of failure has its own number and the
HTTP status an API answer carried decides which one it is.
"""

from __future__ import annotations

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
