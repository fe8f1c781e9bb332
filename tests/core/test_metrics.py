import math

import numpy as np
import pytest

from halo_core.calibration import expected_calibration_error, fit_platt, prior_shift, sigmoid
from halo_core.metrics import classification_metrics, precision_at_recall, tpr_at_fpr, wilson_interval


def test_tpr_at_fpr_is_not_measurable_with_too_few_negatives():
    labels = np.r_[np.ones(50), np.zeros(500)]
    scores = np.r_[np.linspace(0.5, 1, 50), np.linspace(0, 0.6, 500)]
    assert tpr_at_fpr(labels, scores, 1e-2)["measurable"]
    low = tpr_at_fpr(labels, scores, 1e-3)
    assert low == {"fpr": 1e-3, "tpr": None, "n_negatives": 500, "measurable": False}


def test_tpr_at_fpr_value():
    labels = np.r_[np.ones(4), np.zeros(100)]
    scores = np.r_[[0.99, 0.95, 0.5, 0.1], np.linspace(0, 0.9, 100)]
    assert tpr_at_fpr(labels, scores, 1e-2)["tpr"] == 0.5  # one negative (0.9) above 0.5, below 0.95


def test_precision_at_recall_hand_example():
    labels = np.array([1, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    assert precision_at_recall(labels, scores, 1.0) == pytest.approx(0.75)
    assert precision_at_recall(labels, scores, 0.6) == pytest.approx(1.0)


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_single_class_metrics_are_nan_not_invented():
    m = classification_metrics(np.ones(5), np.linspace(0, 1, 5))
    assert math.isnan(m["auroc"]) and m["n_negatives"] == 0


def test_platt_scaling_fixes_an_overconfident_model():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    true_logit = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.5, 4000)
    logits = 4 * true_logit  # overconfident by 4x
    before = expected_calibration_error(sigmoid(logits), labels)["ece"]
    cal = fit_platt(logits, labels)
    after = expected_calibration_error(cal.probability(logits), labels)["ece"]
    assert after < 0.03 < before
    assert cal.a == pytest.approx(0.25 * 8 / 9 * 1.0, rel=0.3)


def test_prior_shift():
    assert prior_shift(np.array([0.5]), 0.5, 1e-3)[0] == pytest.approx(1e-3)
    assert prior_shift(np.array([0.3]), 0.3, 0.3)[0] == pytest.approx(0.3)
