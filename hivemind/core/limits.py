"""Limits on everything a user sends, in one place (docs/limits.md lists them for users).

The API enforces them where input enters: the body size in RequestSizeLimitMiddleware
(413), the JSON parser (NUL characters, nesting), the query parameters in the base
viewset, and the sizes of spec parts in the validators that read them. Each refusal is
a 400 (or 413) naming the field and the limit.
"""

from __future__ import annotations

import re
from collections.abc import Sized

from django.core.exceptions import ValidationError

MAX_REQUEST_BYTES = 1024 * 1024  # a request body (413 past it)
MAX_JSON_DEPTH = 32  # nesting of objects and lists in a body
MAX_QUERY_VALUE = 1000  # characters of one query parameter's value
MAX_SPEC_BYTES = 256 * 1024  # an app's spec, as JSON
MAX_ENV_VARS = 500
MAX_ENV_NAME = 255
MAX_ENV_VALUE = 32 * 1024
MAX_COMMAND_WORDS = 256  # command or args
MAX_COMMAND_LENGTH = 16 * 1024  # one word, or the command line before it is split
MAX_PORTS = 100
MAX_LABELS = 64  # node selector, affinity terms' labels, tolerations
MAX_TERMS = 32  # required or preferred affinity terms
MAX_TEXT = 1024  # any other free text in a spec (health path, toleration key or value)
MAX_FREE_TEXT = 10_000  # a text field of the API without a length of its own (a description)
MAX_PASSWORD = 4096  # a password (login and user endpoints)

# Control characters other than tab, newline and carriage return; NUL is never allowed.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_ONE_LINE = re.compile(r"[\x00-\x1f\x7f]")


def control_character(text: str, *, multiline: bool = False) -> str | None:
    """The first control character `text` may not hold, shown as U+XXXX, or None."""
    match = (_CONTROL if multiline else _CONTROL_ONE_LINE).search(text)
    return f"U+{ord(match.group()):04X}" if match else None


def check_text(field: str, value: str, max_length: int, *, multiline: bool = False) -> str:
    """`value` unless it is too long or holds a control character (NUL above all)."""
    if len(value) > max_length:
        raise ValidationError({field: f"is {len(value)} characters long; at most {max_length}"})
    bad = control_character(value, multiline=multiline)
    if bad:
        allowed = " (tab and newlines are allowed)" if multiline else ""
        raise ValidationError({field: f"holds the control character {bad}, which cannot be stored or run{allowed}"})
    return value


def check_count(field: str, items: Sized, maximum: int, what: str) -> None:
    if len(items) > maximum:
        raise ValidationError({field: f"has {len(items)} {what}; at most {maximum}"})
