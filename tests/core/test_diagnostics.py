import math

import numpy as np
import pandas as pd
import pytest

from halo_core.evaluation.diagnostics import (
    ARC_SNR_BINS,
    arc_snr_zero_behaviour,
    binned_detection,
    completeness_trend,
    per_brick_auroc,
)
from halo_core.evaluation.results import CompletenessTrend


def test_binned_detection_counts_completeness_and_auroc_per_bin():
    theta = np.array([0.5, 0.6, 1.2, 1.3, 1.4])
    pos_probs = np.array([0.2, 0.7, 0.9, 0.95, 0.4])
    neg_probs = np.array([0.1, 0.3, 0.8])
    low, high = binned_detection(theta, pos_probs, neg_probs, (0.0, 1.0, 2.0))
    assert (low.n, low.completeness, low.n_negatives) == (2, 0.5, 3)
    assert high.n == 3 and high.completeness == pytest.approx(2 / 3)
    # 0.2 beats 0.1 only; 0.7 beats 0.1 and 0.3: 3 of 2x3 pairs
    assert low.auroc == pytest.approx(3 / 6)
    assert high.auroc == pytest.approx(8 / 9)  # 0.9, 0.95 beat all three; 0.4 beats two
    assert low.ci95[0] < 0.5 < low.ci95[1]


def test_binned_detection_can_compare_within_a_bin_of_negatives():
    psf = np.array([1.0, 1.6])
    rows = binned_detection(psf, np.array([0.9, 0.6]), np.array([0.8, 0.5]), (0.0, 1.35, math.inf),
                            neg_values=np.array([1.0, 1.6]))
    assert [r.n_negatives for r in rows] == [1, 1]
    assert [r.auroc for r in rows] == [1.0, 1.0]  # against all negatives the first would be 1, the second 0.5


def test_open_last_arc_snr_bin_holds_bright_arcs():
    rows = binned_detection(np.array([2.0, 50.0]), np.array([0.1, 0.9]), np.array([0.2]), ARC_SNR_BINS)
    assert rows[0].n == 1 and rows[-1].n == 1 and rows[-1].completeness == 1.0


def _bin(lo, k, n):
    return binned_detection(np.full(n, lo + 0.1), np.r_[np.ones(k), np.zeros(n - k)], np.zeros(1), (lo, lo + 1))[0]


def test_completeness_falling_beyond_the_intervals_is_a_violation():
    trend = completeness_trend([_bin(0, 190, 200), _bin(1, 100, 200)])  # 0.95 then 0.50, n=200 each
    assert trend.measurable and len(trend.violations) == 1
    assert trend.violations[0].earlier == "0-1"


def test_completeness_falling_within_overlapping_intervals_is_noise():
    trend = completeness_trend([_bin(0, 9, 10), _bin(1, 7, 10)])  # 0.9 then 0.7 at n=10: intervals overlap
    assert trend.measurable and trend.violations == []


def test_completeness_trend_needs_two_filled_bins():
    empty = binned_detection(np.array([0.5]), np.array([0.9]), np.zeros(1), (0.0, 1.0, 2.0))
    assert completeness_trend(empty) == CompletenessTrend(1, False, [])


def test_per_brick_auroc_skips_bricks_with_too_few_samples():
    labels = np.r_[np.ones(3), np.zeros(3), np.ones(3), np.zeros(3), 1, 0]
    probs = np.r_[0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.9, 0.2, 0.7, 0.1, 0.8, 0.3, 0.5, 0.5]
    meta = pd.DataFrame({"brickname": ["a"] * 6 + ["b"] * 6 + ["c"] * 2})
    result = per_brick_auroc(meta, labels, probs, min_per_class=3)  # a: 1.0; b: 0.9 > 3, 0.7 > 2, 0.2 > 1 of 9
    assert result.n_bricks == 2 and result.n_bricks_total == 3
    assert result.std == pytest.approx(np.std([1.0, 6 / 9], ddof=1))


def test_arc_snr_zero_behaviour_without_masked_arcs_is_not_a_number():
    assert arc_snr_zero_behaviour(np.array([])).accuracy_as_lens is None
    assert arc_snr_zero_behaviour(np.array([0.9, 0.1, 0.2, 0.3])).accuracy_as_lens == 0.25
