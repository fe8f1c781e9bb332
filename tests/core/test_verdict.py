"""Champion / challenger statistics and the promotion guard's refusals, on numbers alone."""

from dataclasses import replace

import numpy as np
import pytest

from halo_core.config import ChallengerConfig, load_preset
from halo_core.evaluation.promotion import PromotionError, compare, require_go
from halo_core.evaluation.results import GatesReport, SelectionNull

LABELS = np.r_[np.ones(200), np.zeros(300)].astype(int)
GOOD = LABELS * 1.5 + np.random.default_rng(0).normal(size=500)


def test_a_clearly_worse_challenger_is_refused_on_both_metrics():
    worse = LABELS * 0.2 + np.random.default_rng(1).normal(size=500)
    result = compare(LABELS, GOOD, worse, 300, ChallengerConfig(), 1e-2)
    assert not result.promote and result.not_compared == []
    for row in result.metrics.values():
        assert row.difference < -row.tolerance and row.tolerance >= 0.01 and not row.not_worse


def test_an_equally_good_retrain_is_not_blocked_by_chance():
    retrain = LABELS * 1.5 + np.random.default_rng(2).normal(size=500)  # same skill, other noise
    result = compare(LABELS, GOOD, retrain, 300, ChallengerConfig(), 1e-2)
    assert result.promote, result.metrics
    assert all(r.tolerance == max(0.01, r.ci_half_width) for r in result.metrics.values())


def test_tpr_is_left_out_and_said_so_when_too_few_distinct_negatives():
    result = compare(LABELS, GOOD, GOOD, 40, ChallengerConfig(), 1e-2)
    assert set(result.metrics) == {"auroc"} and "40 distinct" in result.not_compared[0]


def test_the_guard_refuses_a_missing_report_and_a_report_of_another_model(evaluated):
    cfg = load_preset("smoke")
    model = {"sha256": "a" * 64, "training_hash": "t", "data_fingerprint": "d"}
    report = replace(evaluated[1], model_sha256="a" * 64, data_fingerprint="d")
    def gates(fingerprint: str) -> GatesReport:
        return GatesReport({}, SelectionNull(False, {}, 0.6, "paired"), True, fingerprint)

    with pytest.raises(PromotionError, match="never evaluated"):
        require_go(cfg, None, gates("d"), model)
    with pytest.raises(PromotionError, match="describes model bbbbbbbbbbbb"):
        require_go(cfg, replace(report, model_sha256="b" * 64), gates("d"), model)
    with pytest.raises(PromotionError, match="shortcut gates were not measured"):
        require_go(cfg, report, gates("old"), model)
    with pytest.raises(PromotionError, match="shortcut gates were not measured"):
        require_go(cfg, report, None, model)
