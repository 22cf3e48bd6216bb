"""Success-rate and latency statistics against published values and hand computations."""

import numpy as np
import pytest

from world4rl_model.statistics import latency_summary, mcnemar_exact_p, newcombe_difference, wilson_interval


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Table I: 0/10 -> 0..0.2775, 1/29 -> 0.0061..0.1718; 10/20 -> 0.2993..0.7007.
    np.testing.assert_allclose(wilson_interval(0, 10), (0.0, 0.2775), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(1, 29), (0.0061, 0.1718), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(10, 20), (0.2993, 0.7007), atol=1e-4)
    assert wilson_interval(20, 20)[1] == 1.0


def test_wilson_interval_published_values():
    # Newcombe (1998), Stat. Med. 17:857, table I: 81/263 -> 0.2553..0.3662; 15/148 -> 0.0624..0.1605.
    np.testing.assert_allclose(wilson_interval(81, 263), (0.2553, 0.3662), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(15, 148), (0.0624, 0.1605), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(0, 50), (0.0, 0.0713), atol=1e-4)
    low, high = wilson_interval(25, 50)
    assert low == pytest.approx(1 - high)  # symmetric at p = 1/2


def test_newcombe_difference_published_values():
    # Newcombe (1998), Stat. Med. 17:873, table II, method 10: 56/70 - 48/80 -> +0.0524..+0.3339,
    # and 9/10 - 3/10 -> +0.1705..+0.8090.
    d, low, high = newcombe_difference(48, 80, 56, 70)
    assert d == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    d, low, high = newcombe_difference(3, 10, 9, 10)
    assert (low, high) == pytest.approx((0.1705, 0.8090), abs=1e-4)
    d, low, high = newcombe_difference(10, 10, 0, 10)
    assert d == -1.0
    assert -1.0 <= low < high < 0


def test_mcnemar_exact_p_by_hand():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact_p(9, 1) == mcnemar_exact_p(1, 9)
    assert mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)


def test_latency_summary():
    assert latency_summary([]) is None
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary == {"p50": 51.0, "p99": 99.0, "max": 100.0, "cycles": 100}


def test_paired_difference_counts_the_seeds_only_one_policy_solved():
    from world4rl_model.statistics import mcnemar_exact_p, newcombe_difference, paired_difference

    base = [True] * 10 + [False] * 30
    other = [False] * 2 + [True] * 26 + [False] * 12
    paired = paired_difference(base, other)
    assert (paired["only_baseline_succeeded"], paired["only_this_succeeded"]) == (2, 18)
    d, low, high = newcombe_difference(10, 40, 26, 40)
    assert paired["difference"] == d == 0.4
    assert paired["difference_ci95_newcombe"] == [low, high]
    assert paired["mcnemar_exact_p"] == mcnemar_exact_p(2, 18)
    with pytest.raises(ValueError, match="equally many outcomes"):
        paired_difference([True], [True, False])
