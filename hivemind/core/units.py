"""Resource quantities as users write them: CPU as "250m" or "1.5", sizes as "512Mi" or "2G"."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BYTES = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "p": 10**15,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
    "pi": 2**50,
}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_cpu(value: str | int | float) -> int:
    """CPU in millicores: "250m" -> 250, "2" -> 2000, 0.5 -> 500. Raises ValueError naming the problem."""
    text = str(value).strip()
    if isinstance(value, bool) or not text:
        raise ValueError("expected a CPU amount such as 500m, 0.5 or 2")
    try:
        millis = Decimal(text[:-1]) if text.endswith("m") else Decimal(text) * 1000
    except InvalidOperation:
        raise ValueError(f"expected a CPU amount such as 500m, 0.5 or 2, got {text!r}") from None
    if millis < 0 or millis != millis.to_integral_value():
        raise ValueError(f"expected a non-negative whole number of millicores, got {text!r}")
    return int(millis)


def parse_bytes(value: str | int) -> int:
    """A size in bytes: "512Mi" -> 536870912, "1G" -> 10**9, 1024 -> 1024."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512Mi, 10Gi or a number of bytes")
    match = _QUANTITY.match(str(value))
    if not match or match.group(2).lower().rstrip("b") not in _BYTES:
        raise ValueError(f"expected a size such as 512Mi, 10Gi or a number of bytes, got {value!r}")
    number = Decimal(match.group(1)) * _BYTES[match.group(2).lower().rstrip("b")]
    if number != number.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(number)


def parse_count(value: str | int) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"expected a number of at least 0, got {number}")
    return number
