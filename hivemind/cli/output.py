"""Rendering: aligned tables for people, the API's own objects as JSON or YAML for scripts.

Colour is for people at a terminal only: `style` adds none when stdout is a pipe or a
file, or when NO_COLOR is set (https://no-color.org), so every command colours the same way
through `status_style` and `style` and never writes escape codes into a script's input.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click
import yaml

from hivemind.cli.errors import CliError

FORMATS = ("table", "json", "yaml")

GOOD, BUSY, WARN, BAD = "green", "cyan", "yellow", "red"

# One palette for every status, state and health word the API answers with.
STATUS_COLOURS = {
    **dict.fromkeys(("active", "up", "ready", "running", "succeeded", "healthy"), GOOD),
    **dict.fromkeys(("deploying", "starting"), BUSY),
    **dict.fromkeys(
        (
            "suspended", "terminating", "degraded", "deleting", "cordoned", "draining",
            "compensating", "compensated", "cancelled", "near limit",
        ),
        WARN,
    ),
    **dict.fromkeys(("down", "failed", "not-ready", "unhealthy", "exited", "missing", "at limit"), BAD),
}  # fmt: skip
# A workflow or step that runs is under way, not done: cyan, where a running app is green.
PROGRESS_COLOURS = {**STATUS_COLOURS, "running": BUSY}


def examples(*lines: str) -> str:
    """An epilog, so every --help ends with examples; \\b keeps click from rewrapping them."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def output_option(func: Callable) -> Callable:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="table for people; json or yaml print the API's objects for scripts.",
    )(func)


def colour_enabled() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def style(text: str, **kwargs: Any) -> str:
    return click.style(text, **kwargs) if colour_enabled() else text


def status_style(text: str, colours: Mapping[str, str] = STATUS_COLOURS) -> str:
    """A status word in the colour it has in `colours` (on a terminal); others as they are."""
    colour = colours.get(text)
    return style(text, fg=colour) if colour else text


def progress_style(text: str) -> str:
    """A workflow's or a step's state: `running` is cyan (under way), the rest as status_style."""
    return status_style(text, PROGRESS_COLOURS)


def confirm_typed(expected: str, question: str, *, noun: str, refused: str) -> None:
    """Ask to type `expected` again before something that cannot be undone; a mismatch exits 1.

    `refused` ends the error: "the {noun} typed did not match; nothing was {refused}".
    """
    typed = click.prompt(question, default="", show_default=False, err=True)
    if not sys.stdin.isatty():  # piped answers are not echoed: end the prompt's line
        click.echo(err=True)
    if typed.strip() != expected:
        raise CliError(f"the {noun} typed did not match; nothing was {refused}")


def print_data(data: Any, output: str) -> None:
    """json/yaml of exactly what the API answered."""
    if output == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False), nl=False)


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    styles: dict[int, Callable[[str], str]] | None = None,
    empty: str | None = None,
) -> None:
    """Columns padded to their widest cell, measured before any colour is added."""
    if not rows and empty:
        click.echo(empty, err=True)
        return
    styles = styles or {}
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str], header: bool = False) -> str:
        out = []
        for i, cell in enumerate(cells):
            text = str(cell)
            padded = text.ljust(widths[i]) if i < len(cells) - 1 else text
            if header:
                padded = style(padded, bold=True)
            elif i in styles:
                padded = styles[i](text) + padded[len(text) :]
            out.append(padded)
        return "  ".join(out).rstrip()

    click.echo(line(headers, header=True))
    for row in rows:
        click.echo(line(row))


def print_fields(pairs: Sequence[tuple[str, str]]) -> None:
    """One object, one `Key:  value` line per field, values aligned."""
    width = max(len(key) for key, _ in pairs) + 1
    for key, value in pairs:
        click.echo(f"{style((key + ':').ljust(width), bold=True)}  {value}")


def when(value: str | None) -> str:
    """An API timestamp in local time, shortened to the minute for a table."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value


def labels_text(labels: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (labels or {}).items()) or "-"


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)  # pragma: no cover - the loop always returns


def quantity(value: float | None, unit: str | None) -> str:
    """A usage figure in the unit people read: GiB for bytes, cores for millicores."""
    if value is None:
        return "unlimited"
    if unit == "bytes":
        return human_bytes(value)
    if unit == "millicores":
        return f"{value / 1000:g} cores"
    return f"{value:g}" if isinstance(value, float) else str(value)
