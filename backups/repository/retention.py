"""Which snapshots a retention policy keeps, with restic's semantics, as a pure function.

Snapshots are walked newest first. keep_last keeps the n newest. keep_hourly n keeps, for the
n most recent hours that have at least one snapshot, the newest snapshot of that hour; likewise
daily, weekly (ISO weeks) and monthly. A snapshot is kept when any rule keeps it. Buckets are
taken in UTC, so a policy means the same on every node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

RULES: dict[str, Callable[[datetime], Any]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
}


@dataclasses.dataclass
class Selection:
    keep: list  # the snapshots kept, newest first
    forget: list  # the others, newest first
    reasons: dict  # id -> the rules that keep it ("last", "daily", ...)


def select_keep(
    snapshots: Sequence[Any],
    *,
    keep_last: int = 0,
    hourly: int = 0,
    daily: int = 0,
    weekly: int = 0,
    monthly: int = 0,
) -> Selection:
    """Split `snapshots` (objects with `.id` and an aware `.time`) into kept and forgotten ones."""
    counts = {"last": keep_last, "hourly": hourly, "daily": daily, "weekly": weekly, "monthly": monthly}
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"keep {name}: expected a whole number >= 0, got {count!r}")
    if not any(counts.values()):
        raise ValueError("a retention policy keeps at least one snapshot: set keep_last or an hourly..monthly count")
    for snapshot in snapshots:
        if not isinstance(getattr(snapshot, "time", None), datetime) or snapshot.time.tzinfo is None:
            raise ValueError(f"snapshot {getattr(snapshot, 'id', snapshot)!r}: time must be a timezone-aware datetime")

    ordered = sorted(snapshots, key=lambda s: s.time, reverse=True)
    remaining = dict(counts)
    last_bucket: dict[str, Any] = {}
    keep, forget, reasons = [], [], {}
    for position, snapshot in enumerate(ordered):
        when = snapshot.time.astimezone(UTC)
        why = []
        for name in counts:
            if remaining[name] <= 0:
                continue
            bucket = position if name == "last" else RULES[name](when)
            if name in last_bucket and last_bucket[name] == bucket:
                continue  # a newer snapshot of this bucket is already kept
            last_bucket[name] = bucket
            remaining[name] -= 1
            why.append(name)
        if why:
            keep.append(snapshot)
            reasons[snapshot.id] = why
        else:
            forget.append(snapshot)
    return Selection(keep=keep, forget=forget, reasons=reasons)
