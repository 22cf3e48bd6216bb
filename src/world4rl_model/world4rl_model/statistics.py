"""Statistics of success rates and latencies, shared by every evaluator and report. ROS-free.

- `wilson_interval`: 95 % Wilson score interval of a binomial proportion (sensible at 0 and n).
- `newcombe_difference`: the difference of two rates with Newcombe's hybrid-score interval
  (method 10; for independent samples, so conservative for two policies run on the same seeds).
- `mcnemar_exact_p`: the paired test on per-seed outcomes (seeds only A solved vs only B solved).
- `latency_summary`: p50 / p99 / max of a list of latencies.
"""

from __future__ import annotations

import math

Z95 = 1.959964  # the standard normal's 97.5 % quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (sensible at 0 and n successes too)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(s1: int, n1: int, s2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """p2 - p1 with Newcombe's hybrid-score 95 % interval (method 10; independent samples, so it is
    conservative for paired seeds)."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, z)
    l2, u2 = wilson_interval(s2, n2, z)
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, max(-1.0, low), min(1.0, high)


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test: P(a split at least this uneven | discordant pairs split 50/50)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(baseline: list[bool], other: list[bool]) -> dict:
    """Two policies' outcomes on the same seeds (in the same order): other minus baseline with
    Newcombe's interval, the seeds only one of them solved, and McNemar's exact p on those."""
    if len(baseline) != len(other) or not baseline:
        raise ValueError(f"paired_difference: need equally many outcomes, got {len(baseline)} and {len(other)}")
    n = len(baseline)
    d, low, high = newcombe_difference(sum(baseline), n, sum(other), n)
    only_base = sum(a and not b for a, b in zip(baseline, other, strict=True))
    only_other = sum(b and not a for a, b in zip(baseline, other, strict=True))
    return {
        "difference": d,
        "difference_ci95_newcombe": [low, high],
        "only_baseline_succeeded": only_base,
        "only_this_succeeded": only_other,
        "mcnemar_exact_p": mcnemar_exact_p(only_base, only_other),
    }


def latency_summary(latencies_ms: list[float]) -> dict | None:
    """p50 / p99 / max of latencies in ms (None if there are none)."""
    if not latencies_ms:
        return None
    ordered = sorted(latencies_ms)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50": pct(0.5), "p99": pct(0.99), "max": ordered[-1], "cycles": len(ordered)}
