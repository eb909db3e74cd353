"""The syntax of node labels and taints, in one place for the API, the agent and config.py.

Plain Python (no Django), because hivemind/config.py validates HIVEMIND_NODE_LABELS with
it before Django is set up. Keys follow tenant labels (lower-case, may carry a `prefix/`);
values are short tokens without `=`, `:` or `,`, so that `?label=key=value` selectors and
the CLI's `key=value:Effect` stay unambiguous.
"""

from __future__ import annotations

import re

LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
KEY_RULE = "1-63 lower-case letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit"
VALUE_RULE = "at most 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit (or empty)"


class LabelError(ValueError):
    """A label or taint that does not follow the syntax; the message names it."""


def check_key(key: object, what: str = "label") -> str:
    if not isinstance(key, str) or not LABEL_KEY.match(key):
        raise LabelError(f"{what} key {key!r} must be {KEY_RULE}")
    return key


def check_value(key: str, value: object, what: str = "label") -> str:
    if not isinstance(value, str) or not LABEL_VALUE.match(value):
        raise LabelError(f"{what} {key!r}: value {value!r} must be {VALUE_RULE}")
    return value


def parse_labels(text: str) -> dict[str, str]:
    """`zone=eu-1,gpu=true` -> {"zone": "eu-1", "gpu": "true"}; LabelError names the bad item."""
    labels: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise LabelError(f"expected KEY=VALUE pairs separated by commas, got {item!r}")
        key, value = key.strip(), value.strip()
        check_key(key)
        check_value(key, value)
        if key in labels:
            raise LabelError(f"label {key!r} is given twice")
        labels[key] = value
    return labels
