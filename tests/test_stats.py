import math

import numpy as np
import pytest

from harness import stats
from harness.stats import Verdict


def draw(mean: float, sd: float, n: int, seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(mean, sd, n).tolist()


def test_median_ci_covers_known_median() -> None:
    sample = [0.50, 0.52, 0.48, 0.61, 0.49, 0.51, 0.55, 0.47, 0.53, 0.50, 0.70]
    interval = stats.bootstrap_median_ci(sample)
    assert interval.contains(0.51)
    assert interval.low >= min(sample)
    assert interval.high <= max(sample)
    assert interval.high - interval.low < 0.1


def test_median_ci_same_seed_same_interval() -> None:
    sample = draw(1.0, 0.1, 15, seed=1)
    assert stats.bootstrap_median_ci(sample) == stats.bootstrap_median_ci(sample)
    other_seed = stats.bootstrap_median_ci(sample, seed=2)
    assert other_seed != stats.bootstrap_median_ci(sample)


def test_median_ci_empty_sample_is_nan() -> None:
    interval = stats.bootstrap_median_ci([])
    assert math.isnan(interval.low)
    assert math.isnan(interval.high)


def test_median_ci_narrows_with_confidence() -> None:
    sample = draw(1.0, 0.1, 30, seed=3)
    wide = stats.bootstrap_median_ci(sample, confidence=0.99)
    narrow = stats.bootstrap_median_ci(sample, confidence=0.80)
    assert wide.low < narrow.low
    assert wide.high > narrow.high


def test_mann_whitney_small_for_shifted_samples() -> None:
    baseline = draw(1.0, 0.05, 10, seed=4)
    candidate = draw(1.3, 0.05, 10, seed=5)
    assert stats.mann_whitney_p(baseline, candidate) < 0.001


def test_mann_whitney_large_for_same_distribution() -> None:
    p_values = [
        stats.mann_whitney_p(
            draw(1.0, 0.05, 10, seed), draw(1.0, 0.05, 10, seed + 1000)
        )
        for seed in range(100, 300)
    ]
    false_positive_rate = np.mean(np.asarray(p_values) < 0.05)
    assert false_positive_rate <= 0.10
    assert np.median(p_values) > 0.3
    sample = draw(1.0, 0.05, 10, seed=7)
    assert stats.mann_whitney_p(sample, sample) == 1.0


def test_mann_whitney_constant_samples_give_one() -> None:
    assert stats.mann_whitney_p([0.1, 0.1, 0.1], [0.1, 0.1, 0.1]) == 1.0


def test_ratio_ci_contains_injected_shift() -> None:
    baseline = draw(1.0, 0.02, 20, seed=8)
    candidate = (np.asarray(draw(1.0, 0.02, 20, seed=9)) * 1.10).tolist()
    delta_ci, ratio_ci = stats.bootstrap_median_shift_ci(baseline, candidate)
    assert ratio_ci.contains(1.10)
    assert ratio_ci.low > 1.05
    assert delta_ci.contains(0.10)
    assert delta_ci.low > 0


def test_shift_ci_ratio_infinite_for_zero_baseline() -> None:
    _, ratio_ci = stats.bootstrap_median_shift_ci([0.0, 0.0, 0.0], [0.1, 0.1, 0.1])
    assert ratio_ci.high == math.inf


def test_verdict_slower_for_shifted_candidate() -> None:
    baseline = draw(1.0, 0.02, 10, seed=10)
    candidate = draw(1.2, 0.02, 10, seed=11)
    result = stats.compare_medians(baseline, candidate)
    assert result.verdict is Verdict.SLOWER
    assert result.delta == pytest.approx(0.2, abs=0.03)
    assert result.ratio == pytest.approx(1.2, abs=0.03)
    assert result.p_value < 0.001
    assert result.iterations_needed is None


def test_verdict_faster_for_lower_candidate() -> None:
    baseline = draw(0.5, 0.01, 10, seed=12)
    candidate = draw(0.05, 0.005, 10, seed=13)
    result = stats.compare_medians(baseline, candidate)
    assert result.verdict is Verdict.FASTER
    assert result.ratio < 0.15
    assert result.delta_ci.high < 0


def test_verdict_no_change_for_identical_distributions() -> None:
    baseline = draw(1.0, 0.01, 20, seed=14)
    candidate = draw(1.0, 0.01, 20, seed=15)
    result = stats.compare_medians(baseline, candidate)
    assert result.verdict is Verdict.NO_CHANGE
    assert result.ratio_ci.low >= 0.95
    assert result.ratio_ci.high <= 1.05


def test_verdict_inconclusive_for_too_few_iterations() -> None:
    result = stats.compare_medians([1.0, 1.1], [2.0, 2.1, 2.2])
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.reason == (
        "too few iterations (2 baseline, 3 candidate); a verdict needs at least "
        "3 complete iterations per build"
    )
    assert math.isnan(result.p_value)
    assert result.delta == pytest.approx(1.05)


def test_verdict_noisy_samples_inconclusive() -> None:
    baseline = draw(1.0, 0.3, 5, seed=16)
    candidate = draw(1.1, 0.3, 5, seed=17)
    result = stats.compare_medians(baseline, candidate)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.iterations_needed is not None
    assert result.iterations_needed > 5
    assert "too wide to decide" in result.reason


def test_verdict_small_significant_change_unchanged() -> None:
    baseline = draw(1.00, 0.002, 30, seed=18)
    candidate = draw(1.02, 0.002, 30, seed=19)
    result = stats.compare_medians(baseline, candidate, min_effect=0.05)
    assert result.p_value < 0.001
    assert result.verdict is Verdict.NO_CHANGE


def test_estimate_iterations_scales_with_square_of_width() -> None:
    assert stats.estimate_iterations_needed(10, 0.2, 0.1) == 40
    assert stats.estimate_iterations_needed(10, 0.05, 0.1) == 11
    assert stats.estimate_iterations_needed(10, 0.2, 0.0) is None
    assert stats.estimate_iterations_needed(10, 10.0, 0.01) is None
    assert stats.estimate_iterations_needed(10, math.inf, 0.1) is None


def test_paired_ratio_of_consistent_shift() -> None:
    baseline = draw(1.0, 0.2, 20, seed=11)
    candidate = [value * 1.3 for value in baseline]
    result = stats.compare_paired(baseline, candidate)
    assert result.pairs == 20
    assert result.ratio == pytest.approx(1.3)
    assert result.ratio_ci.low == pytest.approx(1.3)
    assert result.ratio_ci.high == pytest.approx(1.3)
    assert result.p_value < 0.001


def test_paired_cancels_drift_unpaired_misses() -> None:
    """A 5% slowdown under a drift of +-30% is clear paired, not unpaired."""
    drift = draw(1.0, 0.3, 15, seed=12)
    baseline = [abs(level) + 0.5 for level in drift]
    candidate = [value * 1.05 for value in baseline]
    paired = stats.compare_paired(baseline, candidate)
    unpaired = stats.compare_medians(baseline, candidate)
    assert paired.p_value < 0.001
    assert unpaired.p_value > 0.3


def test_paired_too_few_pairs_is_nan() -> None:
    result = stats.compare_paired([1.0, 2.0], [1.1, 2.2])
    assert result.ratio == pytest.approx(1.1)
    assert math.isnan(result.ratio_ci.low)
    assert math.isnan(result.p_value)


def test_wilcoxon_equal_pairs_is_one() -> None:
    assert stats.wilcoxon_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0


def test_wilcoxon_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="paired samples differ in length: 3 and 2"):
        stats.wilcoxon_p([1.0, 2.0, 3.0], [1.0, 2.0])
