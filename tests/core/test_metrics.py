import math

import numpy as np
import pytest

from halo_core.evaluation.calibration import (
    Calibration,
    bce_with_logits,
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    prior_shift,
    sigmoid,
)
from halo_core.metrics import (
    classification_metrics,
    operating_points,
    precision_at_prevalence,
    precision_at_recall,
    tpr_at_fpr,
    wilson_interval,
)


def test_tpr_at_fpr_is_not_measurable_with_too_few_negatives():
    labels = np.r_[np.ones(50), np.zeros(500)]
    scores = np.r_[np.linspace(0.5, 1, 50), np.linspace(0, 0.6, 500)]
    assert tpr_at_fpr(labels, scores, 1e-2)["measurable"]
    low = tpr_at_fpr(labels, scores, 1e-3)
    assert low == {"fpr": 1e-3, "tpr": None, "threshold": None, "n_negatives": 500, "n_distinct_negatives": 500,
                   "measurable": False}


def test_repeated_controls_do_not_make_a_low_fpr_measurable():
    labels = np.r_[np.ones(10), np.zeros(150)]
    scores = np.r_[np.ones(10), np.linspace(0, 0.5, 150)]
    assert tpr_at_fpr(labels, scores, 1e-2)["measurable"]
    # 150 negatives, but 50 LRG controls shown 3 times each: FPR resolves only to 1/50
    assert not tpr_at_fpr(labels, scores, 1e-2, n_distinct_negatives=50)["measurable"]


def test_tpr_at_fpr_value():
    labels = np.r_[np.ones(4), np.zeros(100)]
    scores = np.r_[[0.99, 0.95, 0.5, 0.1], np.linspace(0, 0.9, 100)]
    point = tpr_at_fpr(labels, scores, 1e-2)
    assert point["tpr"] == 0.5  # one negative (0.9) above 0.5, below 0.95
    assert point["threshold"] == 0.95  # the highest threshold with that TPR


def test_precision_at_prevalence_formula():
    # 0.5 * 1e-3 found per galaxy, 1e-4 * 0.999 false: purity 0.5e-3 / 0.5999e-3
    assert precision_at_prevalence(0.5, 1e-4, 1e-3) == pytest.approx(0.5 / 0.5999)
    assert precision_at_prevalence(0.9, 1e-2, 0.5) == pytest.approx(0.9 / 0.91)


def test_operating_points_never_extrapolate_precision():
    labels = np.r_[np.ones(10), np.zeros(200)]
    scores = np.r_[np.linspace(0.6, 1, 10), np.linspace(0, 0.7, 200)]
    measurable, too_few, _ = operating_points(labels, scores, 1e-3)
    assert measurable["measurable"] and measurable["precision_at_prevalence"] == pytest.approx(
        precision_at_prevalence(measurable["tpr"], 1e-2, 1e-3))
    assert too_few["precision_at_prevalence"] is None and too_few["n_negatives"] == 200


def test_confusion_counts_at_the_threshold():
    m = classification_metrics(np.array([1, 1, 0, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1, 0.2]), prevalence=1e-3)
    assert m["confusion_at_threshold"] == {"threshold": 0.5, "tp": 1, "fn": 1, "fp": 1, "tn": 2}


def test_precision_at_recall_hand_example():
    labels = np.array([1, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    assert precision_at_recall(labels, scores, 1.0) == pytest.approx(0.75)
    assert precision_at_recall(labels, scores, 0.6) == pytest.approx(1.0)


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_wilson_interval_contains_an_all_or_nothing_proportion():
    for n in range(1, 300):  # e.g. n = 11: the float lower bound at 0/11 came out at +1e-17
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0


def test_single_class_metrics_are_nan_not_invented():
    m = classification_metrics(np.ones(5), np.linspace(0, 1, 5), prevalence=1e-3)
    assert math.isnan(m["auroc"]) and m["n_negatives"] == 0


def test_platt_scaling_fixes_an_overconfident_model():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    true_logit = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.5, 4000)
    logits = 4 * true_logit  # overconfident by 4x
    before = expected_calibration_error(sigmoid(logits), labels).ece
    cal = fit_platt(logits, labels)
    after = expected_calibration_error(cal.probability(logits), labels).ece
    assert after < 0.03 < before
    assert cal.a == pytest.approx(0.25 * 8 / 9 * 1.0, rel=0.3)


def test_prior_shift():
    assert prior_shift(np.array([0.5]), 0.5, 1e-3)[0] == pytest.approx(1e-3)
    assert prior_shift(np.array([0.3]), 0.3, 0.3)[0] == pytest.approx(0.3)


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    true_logit = rng.normal(0, 2.5, 20000)
    labels = (rng.random(20000) < sigmoid(true_logit)).astype(np.float32)  # calibrated at T = 1
    cal = fit_temperature(3.0 * true_logit, labels)  # a network overconfident by T = 3
    assert cal.method == "temperature" and cal.b == 0.0
    assert 1 / cal.a == pytest.approx(3.0, rel=0.05)
    assert bce_with_logits(cal.a * 3.0 * true_logit, labels) < bce_with_logits(3.0 * true_logit, labels)


def test_calibration_round_trips_its_method():
    cal = Calibration(0.5, 0.0, 0.5, 10, "temperature")
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert Calibration.from_dict({"a": 1.0, "b": 0.0, "train_prevalence": 0.5, "n_fit": 3}).method == "platt"
