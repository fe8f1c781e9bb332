import numpy as np
import pandas as pd
import pytest

from halo_core.data.samples import CONTROL, STAMP, build_samples
from halo_core.data.splits import lrg_ids
from halo_core.errors import ContractError


def _meta(n_lrg=40, per_lrg=3, masked=(0, 5)):
    rows = [{"ra": 10 + i * 0.01, "dec": -5 + i * 0.01, "arc_snr": 0.0 if k in masked else 12.0}
            for i in range(n_lrg) for k in [i * per_lrg + j for j in range(per_lrg)]]
    return pd.DataFrame(rows)


def test_paired_6ch_pairs_stamp_with_control_and_control_with_control():
    meta = _meta()
    s = build_samples(meta, "paired_6ch", seed=0)
    assert s.with_control
    assert s.counts == {"positives": len(meta) - 2, "negatives": len(meta) - 2}
    assert set(s.slots[s.labels == 1]) == {STAMP} and set(s.slots[s.labels == 0]) == {CONTROL}


def test_ctrl_negative_uses_each_rows_own_control():
    s = build_samples(_meta(), "ctrl_negative", seed=0)
    assert not s.with_control
    np.testing.assert_array_equal(np.sort(s.rows[s.labels == 1]), np.sort(s.rows[s.labels == 0]))


def test_unpaired_classes_come_from_disjoint_lrgs():
    meta = _meta()
    s = build_samples(meta, "unpaired", seed=0)
    ids = lrg_ids(meta).to_numpy()
    pos, neg = set(ids[s.rows[s.labels == 1]]), set(ids[s.rows[s.labels == 0]])
    assert pos and neg and not pos & neg
    assert 0.3 < s.counts["positives"] / len(s) < 0.7
    other = build_samples(meta, "unpaired", seed=1)
    assert set(ids[other.rows[other.labels == 1]]) != pos  # the halves depend on the seed


def test_masked_arcs_never_become_positives():
    meta = _meta(masked=range(0, 120, 2))
    for construction in ("paired_6ch", "ctrl_negative", "unpaired"):
        s = build_samples(meta, construction, seed=0)
        assert (meta["arc_snr"].to_numpy()[s.rows[s.labels == 1]] > 0).all()


def test_unknown_construction_is_an_error():
    with pytest.raises(ContractError, match="sample_construction"):
        build_samples(_meta(), "positives_only", seed=0)


def test_unpaired_classes_are_matched_in_psf_and_depth_cells():
    meta = _meta(n_lrg=200, masked=())
    rng = np.random.default_rng(0)
    meta["psf_bin"] = rng.integers(0, 3, len(meta))
    meta["depth_bin"] = rng.integers(0, 2, len(meta))
    s = build_samples(meta, "unpaired", seed=0)
    cells = meta[["psf_bin", "depth_bin"]].iloc[s.rows].assign(y=s.labels)
    per_cell = cells.groupby(["psf_bin", "depth_bin"]).y.agg(["sum", "count"])
    assert (per_cell["sum"] * 2 == per_cell["count"]).all()  # as many lenses as non-lenses in every cell
