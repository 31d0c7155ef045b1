"""Confidence intervals, significance test and verdict for two timing samples.

Sources:
- Percentile bootstrap: each sample is resampled with replacement to its own
  size, the statistic is computed per resample, and the interval is the central
  ``confidence`` share of those values. This is the ``method="percentile"``
  procedure that the scipy.stats.bootstrap documentation describes
  (https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.bootstrap.html).
  It is written out here because the difference and the ratio of two medians
  need two independently resampled samples per draw.
- Mann-Whitney U test (H. B. Mann and D. R. Whitney, 1947), two-sided, through
  scipy.stats.mannwhitneyu. With its default ``method="auto"``, scipy computes
  the exact distribution for small samples without ties and a normal
  approximation otherwise.
- Wilcoxon signed-rank test (F. Wilcoxon, 1945), two-sided, through
  scipy.stats.wilcoxon on paired samples (one pair per round). Pairs with a
  zero difference are dropped (its default ``zero_method="wilcox"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import stats as scipy_stats

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 5000
# Fixed so that the same raw data always gives the same report.
DEFAULT_SEED = 20260701
# A verdict on fewer iterations per build would rest on a CI of two points.
MIN_ITERATIONS = 3
# Estimates above this are reported as "more than MAX_ITERATIONS_ESTIMATE".
MAX_ITERATIONS_ESTIMATE = 1000


class Verdict(StrEnum):
    """Outcome of comparing a candidate sample with a baseline sample."""

    FASTER = "faster"
    SLOWER = "slower"
    NO_CHANGE = "no significant change"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Interval:
    """A closed confidence interval, with NaN bounds when it is undefined."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class MedianComparison:
    """Candidate against baseline: medians, their difference and ratio, verdict.

    ``delta`` is candidate minus baseline in seconds and ``ratio`` is candidate
    over baseline, so a ratio below 1 means the candidate is faster.
    ``iterations_needed`` is set only for an inconclusive verdict that more
    iterations could likely settle. ``reason`` explains the verdict in one
    sentence.
    """

    n_baseline: int
    n_candidate: int
    baseline_median: float
    candidate_median: float
    delta: float
    ratio: float
    delta_ci: Interval
    ratio_ci: Interval
    p_value: float
    verdict: Verdict
    reason: str
    iterations_needed: int | None = None


def resample_medians(
    sample: Sequence[float], *, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Return the medians of ``resamples`` bootstrap resamples of ``sample``."""
    values = np.asarray(sample, dtype=float)
    indexes = rng.integers(0, len(values), size=(resamples, len(values)))
    return np.median(values[indexes], axis=1)


def percentile_interval(values: np.ndarray, confidence: float) -> Interval:
    """Return the central ``confidence`` share of ``values``.

    The bounds are observed values (no interpolation), rounded outwards, so an
    infinite value yields an infinite bound instead of NaN.
    """
    tail = (1 - confidence) / 2 * 100
    low = np.percentile(values, tail, method="lower")
    high = np.percentile(values, 100 - tail, method="higher")
    return Interval(float(low), float(high))


def bootstrap_median_ci(
    sample: Sequence[float],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Compute the percentile bootstrap confidence interval of the median.

    Returns an interval of NaN bounds for an empty sample.
    """
    if len(sample) == 0:
        return Interval(math.nan, math.nan)
    rng = np.random.default_rng(seed)
    medians = resample_medians(sample, resamples=resamples, rng=rng)
    return percentile_interval(medians, confidence)


def bootstrap_median_shift_ci(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[Interval, Interval]:
    """Compute bootstrap CIs of the difference and the ratio of two medians.

    The two samples are resampled independently, as two unpaired groups. The
    difference is candidate minus baseline and the ratio candidate over
    baseline. The ratio's bounds are infinite when some resampled baseline
    median is 0, which happens with CPU times below the clock's resolution.
    """
    rng = np.random.default_rng(seed)
    baseline_medians = resample_medians(baseline, resamples=resamples, rng=rng)
    candidate_medians = resample_medians(candidate, resamples=resamples, rng=rng)
    differences = candidate_medians - baseline_medians
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(
            baseline_medians > 0, candidate_medians / baseline_medians, np.inf
        )
    return (
        percentile_interval(differences, confidence),
        percentile_interval(ratios, confidence),
    )


def mann_whitney_p(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """Return the two-sided Mann-Whitney U p-value of the two samples.

    Returns 1.0 where scipy returns NaN (for example two identical constant
    samples), because such samples show no evidence of a difference.
    """
    result = scipy_stats.mannwhitneyu(baseline, candidate, alternative="two-sided")
    p_value = float(result.pvalue)
    return 1.0 if math.isnan(p_value) else p_value


def estimate_iterations_needed(
    n_now: int, current_half_width: float, target_half_width: float
) -> int | None:
    """Estimate the iterations per build at which a CI shrinks to a target width.

    Normal approximation: the half-width of a confidence interval of a median
    shrinks in proportion to 1/sqrt(n), so n_needed = n_now * (current /
    target)^2. This assumes the spread seen so far stays the same. Returns None
    when the target is not positive or the estimate exceeds
    MAX_ITERATIONS_ESTIMATE, meaning that more iterations are unlikely to
    settle the question.
    """
    if target_half_width <= 0 or not math.isfinite(current_half_width):
        return None
    needed = math.ceil(n_now * (current_half_width / target_half_width) ** 2)
    if needed > MAX_ITERATIONS_ESTIMATE:
        return None
    return max(needed, n_now + 1)


def compare_medians(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    alpha: float = 0.05,
    min_effect: float = 0.05,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> MedianComparison:
    """Compare two timing samples and decide a verdict.

    ``alpha`` is the significance level of the Mann-Whitney test and
    ``min_effect`` the smallest relative change of the median that counts
    (0.05 is 5%). See ``decide_verdict`` for the rule.
    """
    baseline_median = float(np.median(baseline)) if len(baseline) else math.nan
    candidate_median = float(np.median(candidate)) if len(candidate) else math.nan
    delta = candidate_median - baseline_median
    ratio = candidate_median / baseline_median if baseline_median > 0 else math.inf
    if min(len(baseline), len(candidate)) < MIN_ITERATIONS:
        return MedianComparison(
            n_baseline=len(baseline),
            n_candidate=len(candidate),
            baseline_median=baseline_median,
            candidate_median=candidate_median,
            delta=delta,
            ratio=ratio,
            delta_ci=Interval(math.nan, math.nan),
            ratio_ci=Interval(math.nan, math.nan),
            p_value=math.nan,
            verdict=Verdict.INCONCLUSIVE,
            reason=(
                f"too few iterations ({len(baseline)} baseline, "
                f"{len(candidate)} candidate); a verdict needs at least "
                f"{MIN_ITERATIONS} complete iterations per build"
            ),
        )
    delta_ci, ratio_ci = bootstrap_median_shift_ci(
        baseline, candidate, confidence=confidence, resamples=resamples, seed=seed
    )
    p_value = mann_whitney_p(baseline, candidate)
    verdict, reason, needed = decide_verdict(
        ratio=ratio,
        delta=delta,
        delta_ci=delta_ci,
        ratio_ci=ratio_ci,
        p_value=p_value,
        alpha=alpha,
        min_effect=min_effect,
        n_now=min(len(baseline), len(candidate)),
    )
    return MedianComparison(
        n_baseline=len(baseline),
        n_candidate=len(candidate),
        baseline_median=baseline_median,
        candidate_median=candidate_median,
        delta=delta,
        ratio=ratio,
        delta_ci=delta_ci,
        ratio_ci=ratio_ci,
        p_value=p_value,
        verdict=verdict,
        reason=reason,
        iterations_needed=needed,
    )


def decide_verdict(
    *,
    ratio: float,
    delta: float,
    delta_ci: Interval,
    ratio_ci: Interval,
    p_value: float,
    alpha: float,
    min_effect: float,
    n_now: int,
) -> tuple[Verdict, str, int | None]:
    """Decide the verdict, its one-sentence reason and the iterations estimate.

    - "faster" or "slower": p < alpha, the relative change of the median is at
      least ``min_effect``, and the CI of the difference excludes 0.
    - "no significant change": otherwise, when the whole CI of the ratio lies
      within [1 - min_effect, 1 + min_effect].
    - "inconclusive" otherwise, with an estimate of the iterations per build
      that would likely settle it (see ``estimate_iterations_needed``). The
      target is a CI of the difference narrow enough to exclude 0 when the
      observed change is at least ``min_effect``, else a CI of the ratio
      narrow enough to fit within the equivalence band around 1.
    """
    relative_change = ratio - 1
    large_enough = abs(relative_change) >= min_effect
    excludes_zero = not delta_ci.contains(0.0)
    if p_value < alpha and large_enough and excludes_zero:
        verdict = Verdict.SLOWER if delta > 0 else Verdict.FASTER
        reason = (
            f"median {relative_change:+.1%} with p = {p_value:.3g} < {alpha:g} "
            f"and a CI of the difference that excludes 0"
        )
        return verdict, reason, None
    if 1 - min_effect <= ratio_ci.low and ratio_ci.high <= 1 + min_effect:
        reason = (
            f"the CI of the ratio lies within {1 - min_effect:g}-{1 + min_effect:g}"
        )
        return Verdict.NO_CHANGE, reason, None
    if large_enough:
        needed = estimate_iterations_needed(n_now, delta_ci.half_width, abs(delta))
    else:
        target = min_effect - abs(relative_change)
        needed = estimate_iterations_needed(n_now, ratio_ci.half_width, target)
    reason = (
        f"median {relative_change:+.1%} with p = {p_value:.3g}, but the CI is too "
        f"wide to decide at a minimum effect of {min_effect:.0%}"
    )
    return Verdict.INCONCLUSIVE, reason, needed


@dataclass(frozen=True)
class PairedComparison:
    """Candidate against baseline, paired by round.

    ``ratio`` is the median over rounds of candidate over baseline, and
    ``ratio_ci`` its percentile bootstrap CI. Pairing cancels drift of the
    host that is slower than one round, which unpaired medians still carry.
    """

    pairs: int
    ratio: float
    ratio_ci: Interval
    p_value: float


def wilcoxon_p(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """Return the two-sided Wilcoxon signed-rank p-value of paired samples.

    Returns NaN for fewer than MIN_ITERATIONS pairs, and 1.0 when every pair
    is equal, because such samples show no evidence of a difference.
    """
    if len(baseline) != len(candidate):
        raise ValueError(
            f"paired samples differ in length: {len(baseline)} and {len(candidate)}"
        )
    if len(baseline) < MIN_ITERATIONS:
        return math.nan
    differences = np.asarray(candidate, dtype=float) - np.asarray(baseline, float)
    if not np.any(differences):
        return 1.0
    result = scipy_stats.wilcoxon(differences, alternative="two-sided")
    p_value = float(result.pvalue)
    return 1.0 if math.isnan(p_value) else p_value


def compare_paired(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> PairedComparison:
    """Compare paired samples: median per-pair ratio, its CI, Wilcoxon p-value.

    A pair whose baseline value is 0 gives an infinite ratio. With fewer than
    MIN_ITERATIONS pairs the CI and the p-value are NaN.
    """
    base = np.asarray(baseline, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(base > 0, cand / base, np.inf)
    ratio = float(np.median(ratios)) if len(ratios) else math.nan
    if len(ratios) < MIN_ITERATIONS:
        ratio_ci = Interval(math.nan, math.nan)
    else:
        ratio_ci = bootstrap_median_ci(
            ratios.tolist(), confidence=confidence, resamples=resamples, seed=seed
        )
    return PairedComparison(
        pairs=len(ratios),
        ratio=ratio,
        ratio_ci=ratio_ci,
        p_value=wilcoxon_p(baseline, candidate),
    )
