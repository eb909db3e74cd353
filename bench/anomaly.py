"""Anomaly detection on generated series (tests/observability/anomaly_corpus.py): precision,
recall, detection delay per kind of injected change, at the defaults (observability/anomaly.py)
and around them (k, consecutive), and the time a verdict costs.

Environment: BENCH_SERIES (400), BENCH_SEED (7).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SERIES = int(os.environ.get("BENCH_SERIES", "400"))
SEED = int(os.environ.get("BENCH_SEED", "7"))


def main() -> None:
    from observability.anomaly import DEFAULTS, Params, judge
    from tests.observability.anomaly_corpus import corpus, score

    series = corpus(seed=SEED, count=SERIES)
    print(f"machine: {os.cpu_count()} cores; {SERIES} series x 600 points (seed {SEED}), a quarter each clean, "
          "spike, level shift, slow drift")  # fmt: skip
    print(f"defaults: window {DEFAULTS.window}, gap {DEFAULTS.gap}, k {DEFAULTS.k}, consecutive {DEFAULTS.consecutive}")
    for label, params in (
        ("defaults", DEFAULTS),
        ("k=3", Params(k=3.0)),
        ("k=5", Params(k=5.0)),
        ("consecutive=1", Params(consecutive=1)),
        ("consecutive=5", Params(consecutive=5)),
    ):
        started = time.perf_counter()
        result = score(series, params)
        elapsed = time.perf_counter() - started
        kinds = "  ".join(f"{k} {d}/{e}" for k, (d, e) in result.per_kind.items())
        print(f"{label:14} precision {result.precision:.3f}  recall {result.recall:.3f}  false alarms "
              f"{result.false_alarms:3d}  delay median {statistics.median(result.delays):.0f} max "
              f"{max(result.delays)} points  ({kinds})  {elapsed:.1f} s")  # fmt: skip
    values = series[1].values
    started = time.perf_counter()
    for _ in range(200):
        judge(values)
    print(f"one verdict on a 600-point series: {(time.perf_counter() - started) / 200 * 1000:.2f} ms")


if __name__ == "__main__":
    main()
