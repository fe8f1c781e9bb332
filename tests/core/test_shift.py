"""The shift suite's sets and metrics (halo_core/shift.py)."""

import numpy as np
import pytest

from halo_core.evaluation.results import InDistribution
from halo_core.evaluation.shift import render_shift_set, shift_metrics


def _arc_light(images, labels):
    """Mean light 6-20 px from the centre, where the arcs are and the LRG core is not."""
    y, x = np.mgrid[:64, :64] - 32
    ring = (np.hypot(x, y) > 6) & (np.hypot(x, y) < 20)
    return [images[labels == c][:, 1][:, ring].sum(-1).mean() for c in (0, 1)]


@pytest.mark.parametrize("name", ["independent", "compact_sources", "crowded_fields", "psf_extremes", "faint_arcs"])
def test_each_shift_set_has_its_own_lenses_and_non_lenses(name):
    pytest.importorskip("lenstronomy")
    images, labels, lrg = render_shift_set(name, 6, seed=1)
    assert images.shape == (12, 3, 64, 64) and np.isfinite(images).all()
    assert labels.tolist() == [1] * 6 + [0] * 6 and len(np.unique(lrg)) == 12  # no LRG in both classes
    again, _, _ = render_shift_set(name, 6, seed=1)
    assert np.array_equal(images, again)  # a fixed seed: the same set every evaluation
    if name not in ("faint_arcs", "crowded_fields"):  # faint arcs and companions blur this simple contrast
        non_lens, lens = _arc_light(images, labels)
        assert lens > non_lens


def test_shift_metrics_use_the_sets_own_threshold_and_report_drops():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], 150)
    logits = np.where(labels == 1, rng.normal(3, 1, 300), rng.normal(-3, 1, 300))
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    m = shift_metrics(labels, logits, sigmoid, InDistribution(0.999, 0.99, 0.01), 1e-2)
    assert m.measurable and m.n_non_lenses == 150 and 0.9 < m.tpr_at_operating_fpr <= 1
    assert m.tpr_drop == pytest.approx(0.99 - m.tpr_at_operating_fpr) and m.ece_raw >= 0
    unmeasured = InDistribution(0.999, None, 0.01)  # the test split too small for the operating FPR
    assert shift_metrics(labels, logits, sigmoid, unmeasured, 1e-2).tpr_drop is None
    few = shift_metrics(labels[:150 + 50], logits[:200], sigmoid, InDistribution(0.999, 0.99, 0.01), 1e-2)
    assert not few.measurable and few.tpr_at_operating_fpr is None and few.tpr_drop is None
    # at 1e-3 the same 150 non-lenses are too few: the operating point is the caller's, not a constant
    assert not shift_metrics(labels, logits, sigmoid, unmeasured, 1e-3).measurable
