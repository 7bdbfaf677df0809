"""Confidence intervals and trend verdicts (lossbarcode.confidence): invariants, not golden
numbers."""

import numpy as np
import pytest
from scipy.stats import t

from lossbarcode import confidence, topology


def barcode(lengths, births=None) -> topology.Barcode:
    """An essential bar at 0, then one finite bar of each length (born at ``births``)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    births = np.arange(1, lengths.size + 1) * 0.01 if births is None else np.asarray(births)
    n = lengths.size + 1
    return topology.Barcode(
        births=np.concatenate([[0.0], births]), deaths=np.concatenate([[np.inf], births + lengths]),
        minima=np.arange(n), saddles=np.concatenate([[-1], np.arange(1, n)]),
        merged_into=np.concatenate([[-1], np.zeros(n - 1, dtype=int)]))


def test_the_seed_interval_is_students_t():
    interval = confidence.seed_interval([1.0, 2.0, 3.0])
    half = t.ppf(0.975, 2) * 1.0 / np.sqrt(3)
    assert interval.estimate == pytest.approx(2.0)
    assert (interval.low, interval.high) == pytest.approx((2 - half, 2 + half))
    one = confidence.seed_interval([5.0])
    assert one.estimate == 5.0 and one.low is None and "one seed" in one.method


def test_a_run_whose_bars_are_all_equal_has_no_spread_from_its_minima():
    runs = [barcode([0.2, 0.2, 0.2])] * 3
    interval = confidence.scale_interval(runs)
    assert interval.estimate == pytest.approx(np.sqrt(3 * 0.04))
    assert interval.low == pytest.approx(interval.estimate)
    assert interval.high == pytest.approx(interval.estimate)


def test_the_interval_holds_its_estimate_widens_with_spread_and_is_reproducible():
    tight = [barcode([0.1, 0.11, 0.12]), barcode([0.1, 0.12, 0.11])]
    loose = [barcode([0.01, 0.3, 0.05]), barcode([0.2, 0.02, 0.4])]
    a, b = confidence.scale_interval(tight), confidence.scale_interval(loose)
    for interval in (a, b):
        assert interval.low <= interval.estimate <= interval.high
    assert (b.high - b.low) > 5 * (a.high - a.low)
    assert confidence.scale_interval(loose) == b  # fixed seed: same data, same interval


def test_every_variant_bootstraps_the_score_it_names():
    runs = [barcode([0.1, 0.4]), barcode([0.2, 0.3])]
    for variant in ("l2", "sum", "max", "mean", "l2_range", "max_range"):
        interval = confidence.scale_interval(runs, variant)
        assert interval.estimate == pytest.approx(
            np.mean([confidence.run_score(r, variant) for r in runs]))
        if variant.startswith("max"):  # a draw of a run's bars never beats its longest
            reps = confidence.scale_replicates(runs, variant, n_bootstrap=500)
            assert reps.max() <= max(confidence.run_score(r, variant) for r in runs) + 1e-12
    with pytest.raises(ValueError, match="variant"):
        confidence.scale_interval(runs, "l3")


def test_runs_without_finite_bars_score_zero_with_a_zero_interval():
    interval = confidence.scale_interval([barcode([]), barcode([])])
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)


def noisy_scale(center: float, rng) -> list[topology.Barcode]:
    return [barcode(center * (1 + 0.05 * rng.standard_normal(4)).clip(0.5)) for _ in range(3)]


def test_a_clear_fall_is_decreasing_and_a_clear_rise_is_increasing():
    rng = np.random.default_rng(1)
    falling = {w: noisy_scale(1.0 / w, rng) for w in (4, 8, 16, 32)}
    rising = {w: noisy_scale(0.01 * w, rng) for w in (4, 8, 16, 32)}
    down, up = confidence.trend("width", falling), confidence.trend("width", rising)
    assert down.verdict == "decreasing" and down.rho.high < 0 and down.rho.estimate == -1
    assert up.verdict == "increasing" and up.rho.low > 0
    assert down.values == (4, 8, 16, 32) and len(down.means) == 4


def test_overlapping_scales_are_not_resolved():
    rng = np.random.default_rng(2)
    # Each scale's runs range widely and the means barely move: the interval must include 0.
    scales = {w: [barcode(rng.uniform(0.0, 1.0, 4)) for _ in range(3)] for w in (4, 8, 16)}
    result = confidence.trend("width", scales)
    assert result.verdict == "not resolved"
    assert result.rho.low <= 0 <= result.rho.high


def test_a_trend_needs_three_scales_and_a_score_that_varies():
    rng = np.random.default_rng(3)
    two = confidence.trend("depth", {1: noisy_scale(1, rng), 2: noisy_scale(0.5, rng)})
    assert two.verdict == "not testable" and "at least 3" in two.reason
    zeros = confidence.trend("width", {w: [barcode([])] * 2 for w in (4, 8, 16)})
    assert zeros.verdict == "not resolved" and "resolution" in zeros.reason


def test_an_order_below_the_paths_resolution_is_not_a_trend():
    rng = np.random.default_rng(4)
    tiny = {w: noisy_scale(1e-5 / w, rng) for w in (4, 8, 16, 32)}
    assert confidence.trend("width", tiny).verdict == "decreasing"  # ordered, but ...
    unresolved = confidence.trend("width", tiny, resolution=1e-4)  # ... all within path_atol
    assert unresolved.verdict == "not resolved" and "resolution" in unresolved.reason
    # Resolved bars at the narrow end and unresolved ones beyond still make a fall.
    mixed = {4: noisy_scale(0.1, rng), 8: noisy_scale(0.01, rng),
             16: noisy_scale(1e-5, rng), 32: noisy_scale(1e-6, rng)}
    assert confidence.trend("width", mixed, resolution=1e-4).verdict == "decreasing"
