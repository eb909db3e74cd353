"""The quantity parsers: exactly their grammar and range, and one error type for everything else."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hivemind.core.units import (
    MAX_BYTES,
    MAX_CPU_MILLIS,
    QuantityError,
    parse_bytes,
    parse_count,
    parse_cpu,
    parse_duration,
    parse_timestamp,
)

PARSERS = [parse_cpu, parse_bytes, parse_count, parse_duration, parse_timestamp]

HOSTILE = [
    "NaN", "nan", "-nan", "+NaN", "Infinity", "-Infinity", "inf", "+inf", "INF", "∞",
    float("nan"), float("inf"), float("-inf"), 1e30, -1, -0.5, "-1", "+1", "1e3", "1E3", "1e30", "0x10",
    "", "   ", "9" * 30, "1_000", "1,5", "½", "\u0661", "\x00", "1\x00", "1 2", True, False, None, [], {}, "1..2",
]  # fmt: skip


@pytest.mark.parametrize("parse", PARSERS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_hostile_values_raise_the_one_error_type(parse, value):
    with pytest.raises(QuantityError) as error:
        parse(value)
    assert str(error.value).startswith(("expected", "'")), str(error.value)


@given(st.one_of(st.text(max_size=60), st.floats(), st.integers(), st.booleans(), st.none()))
def test_any_value_parses_or_raises_quantity_error(value):
    for parse in PARSERS:
        try:
            result = parse(value)
        except QuantityError:
            continue
        if parse is parse_timestamp:
            assert result.tzinfo is not None
            continue
        assert isinstance(result, int | float) and not isinstance(result, bool)
        assert result >= 0 and math.isfinite(result)


@pytest.mark.parametrize(
    ("text", "millis"),
    [("250m", 250), ("2", 2000), ("0.5", 500), (0.5, 500), (2, 2000), ("1.25", 1250), (" 100m ", 100), ("0", 0)],
)
def test_cpu(text, millis):
    assert parse_cpu(text) == millis


def test_cpu_limits():
    assert parse_cpu(MAX_CPU_MILLIS // 1000) == MAX_CPU_MILLIS
    with pytest.raises(QuantityError, match="at most 1000000 cores"):
        parse_cpu(MAX_CPU_MILLIS // 1000 + 1)
    with pytest.raises(QuantityError, match="whole millicores"):
        parse_cpu("0.0001")


@pytest.mark.parametrize(
    ("text", "size"),
    [("512Mi", 512 * 2**20), ("1G", 10**9), ("1gb", 10**9), (1024, 1024), ("1.5Ki", 1536), ("64MiB", 64 * 2**20)],
)
def test_bytes(text, size):
    assert parse_bytes(text) == size


def test_bytes_limits():
    assert parse_bytes("8Pi") == MAX_BYTES
    with pytest.raises(QuantityError, match="at most 8Pi"):
        parse_bytes("9Pi")
    with pytest.raises(QuantityError, match="whole number of bytes"):
        parse_bytes("1.5")


def test_count_and_duration():
    assert parse_count("3") == 3 and parse_count(0) == 0
    with pytest.raises(QuantityError, match="0 to 10"):
        parse_count(11, high=10)
    assert parse_duration("90s") == 90 and parse_duration("5m") == 300 and parse_duration("500ms") == 0.5
    assert parse_duration(2) == 2 and parse_duration("1d") == 86400
    with pytest.raises(QuantityError, match=r"0\.5 to 3600 seconds"):
        parse_duration("2h", low=0.5, high=3600)


def test_timestamp():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_timestamp("5m", now=now) == now - timedelta(minutes=5)
    assert parse_timestamp("300", now=now) == now - timedelta(seconds=300)
    assert parse_timestamp("2026-01-31T12:00:00Z") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_timestamp("2026-01-31T14:00:00+02:00") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_timestamp("2026-01-31 12:00") == datetime(2026, 1, 31, 12, tzinfo=UTC)  # no offset: UTC
    for bad, message in [("0", "before now"), ("11000d", "seconds"), ("0001-01-01T00:00:00+01:00", "1970 to 9998")]:
        with pytest.raises(QuantityError, match=message):
            parse_timestamp(bad, now=now)
