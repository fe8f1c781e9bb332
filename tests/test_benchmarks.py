"""The benchmarks' own arithmetic (their timings are run by hand, never asserted here)."""

import numpy as np

from benchmarks.precision import MAX_DROP, drop_bound


def test_precision_drop_bound_is_the_one_sided_95_bound_of_the_paired_drop():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 1000)
    reference = labels * 2.0 + rng.normal(size=2000)
    same = drop_bound(labels, reference, reference.copy(), 1000, 1e-2)
    assert same["not_worse"] and same["n_test"] == 2000
    for row in same["metrics"].values():
        assert row["drop"] == 0 and row["drop_upper_95"] == 0
    worse = drop_bound(labels, reference, labels * 1.0 + rng.normal(size=2000), 1000, 1e-2)
    auroc = worse["metrics"]["auroc"]
    assert auroc["drop"] > 0.1 and auroc["drop_upper_95"] > auroc["drop"] > MAX_DROP and not worse["not_worse"]
