"""Quantities as users write them — one parser per kind, one error type for every bad value.

CPU as "250m" or "1.5" (cores), sizes as "512Mi" or "2G", counts as 3, durations as "90s"
or "5m", timestamps as "2026-01-31T12:00:00Z" or how long ago ("5m"). Each parser accepts
exactly its documented grammar and range and raises `QuantityError` (a ValueError) for
everything else: NaN and infinities in any spelling, exponents, signs, empty strings,
booleans, values past the range (which would overflow a database column or a Docker
field). Specs, quotas, reservations, filters and the CLI all call these, so no caller meets
a different exception. The limits are in docs/limits.md.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

MAX_CPU_MILLIS = 1_000_000 * 1000  # a million cores
MAX_BYTES = 2**53  # 8 PiB: far past any node or tenant here, far below a 64-bit column's sum
MAX_COUNT = 1_000_000
MAX_SECONDS = 10 * 365 * 86400  # ten years

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
_SECONDS = {"ms": Decimal("0.001"), "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400}
# Plain decimal numbers only: no sign, no exponent, no NaN or Infinity, a bounded number of digits.
_CPU = re.compile(r"^(?:(\d{1,10})m|(\d{1,7})(?:\.(\d{1,3}))?)$", re.ASCII)
_SIZE = re.compile(r"^(\d{1,19})(?:\.(\d{1,9}))?\s*([kmgtp]i?)?b?$", re.IGNORECASE | re.ASCII)
_COUNT = re.compile(r"^\d{1,10}$", re.ASCII)
_DURATION = re.compile(r"^(\d{1,10})(?:\.(\d{1,6}))?\s*(ms|s|m|h|d)?$", re.ASCII)


class QuantityError(ValueError):
    """A value that is not a quantity of the expected kind; the message says what was expected."""


def _text(value: object, expected: str) -> str:
    """The value as text, for a string or a JSON number; anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(f"expected {expected}, got {value!r}")
    # nan, inf and 1e+30 keep their spelling and fail the grammar, as "-1" does.
    text = (value if isinstance(value, str) else repr(value)).strip()
    if not text:
        raise QuantityError(f"expected {expected}, got an empty value")
    return text


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def parse_cpu(value: str | int | float) -> int:
    """CPU in millicores: "250m" -> 250, "2" -> 2000, 0.5 -> 500 (whole millicores, up to a million cores)."""
    expected = "a CPU amount such as 500m, 0.5 or 2"
    text = _text(value, expected)
    match = _CPU.match(text)
    if not match:
        if re.match(r"^[0-9]+\.[0-9]{4,}$", text):
            raise QuantityError(f"expected whole millicores (at most 3 decimals of a core), got {_shown(text)}")
        raise QuantityError(f"expected {expected}, got {_shown(text)}")
    millis_text, cores, fraction = match.groups()
    millis = int(millis_text) if millis_text is not None else int(cores) * 1000 + int((fraction or "").ljust(3, "0"))
    if millis > MAX_CPU_MILLIS:
        raise QuantityError(f"expected at most {MAX_CPU_MILLIS // 1000} cores, got {_shown(text)}")
    return millis


def parse_bytes(value: str | int | float) -> int:
    """A size in bytes: "512Mi" -> 536870912, "1G" -> 10**9, 1024 -> 1024 (up to 8 PiB)."""
    expected = "a size such as 512Mi, 10Gi or a number of bytes"
    text = _text(value, expected)
    match = _SIZE.match(text)
    if not match:
        raise QuantityError(f"expected {expected}, got {_shown(text)}")
    whole, fraction, unit = match.groups()
    number = Decimal(f"{whole}.{fraction or 0}") * _BYTES[(unit or "").lower()]
    if number != number.to_integral_value():
        raise QuantityError(f"{_shown(text)} is not a whole number of bytes")
    if number > MAX_BYTES:
        raise QuantityError(f"expected at most 8Pi bytes, got {_shown(text)}")
    return int(number)


def parse_count(value: str | int | float, *, high: int = MAX_COUNT) -> int:
    """A whole number from 0 to `high`: 3 or "3"."""
    text = _text(value, "a whole number")
    if not _COUNT.match(text):
        raise QuantityError(f"expected a whole number from 0 to {high}, got {_shown(text)}")
    number = int(text)
    if number > high:
        raise QuantityError(f"expected a whole number from 0 to {high}, got {number}")
    return number


def parse_duration(value: str | int | float, *, low: float = 0, high: float = MAX_SECONDS) -> float:
    """Seconds: 90, "90s", "1.5m", "2h", "1d", "500ms"; from `low` to `high`."""
    expected = "a duration such as 30, 30s, 5m, 2h or 1d"
    text = _text(value, expected)
    match = _DURATION.match(text)
    if not match:
        raise QuantityError(f"expected {expected}, got {_shown(text)}")
    whole, fraction, unit = match.groups()
    seconds = float(Decimal(f"{whole}.{fraction or 0}") * _SECONDS[unit or ""])
    if not low <= seconds <= high:
        raise QuantityError(f"expected {low:g} to {high:g} seconds, got {_shown(text)}")
    return seconds


TIMESTAMP_HELP = "an ISO 8601 time such as 2026-01-31T12:00:00Z, or how long ago: 300, 90s, 5m, 2h, 1d"


def parse_timestamp(value: str, *, now: datetime | None = None, max_ago: float = MAX_SECONDS) -> datetime:
    """An aware UTC time: an ISO 8601 time (UTC when it names no offset, 1970 to 9999), or a
    duration that long before `now` (more than 0, at most `max_ago` seconds)."""
    text = _text(value, TIMESTAMP_HELP)
    if _DURATION.match(text):
        seconds = parse_duration(text, high=max_ago)
        if seconds <= 0:
            raise QuantityError(f"expected a time before now: {TIMESTAMP_HELP}, got {_shown(text)}")
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QuantityError(f"expected {TIMESTAMP_HELP}, got {_shown(text)}") from None
    if not 1970 <= moment.year <= 9998:  # far ends overflow when moved to UTC
        raise QuantityError(f"expected a time from 1970 to 9998, got {_shown(text)}")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
