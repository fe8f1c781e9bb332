"""The simulated data is frozen: a fixed-seed, fixed-size simulation keeps the content it had when the
demo's go/no-go bar was set (issue 22). A change to the simulator's distributions, recipes or random
streams changes this fingerprint; so would data made easier. Rendering in parallel must not.

The fingerprint is over decoded content (every column's values, every stamp's float32 pixels), not
file bytes, so a new parquet or zlib release does not move it."""

import hashlib

import pyarrow.parquet as pq
import pytest

from halo_core.config import SimulationConfig
from halo_core.data.stamps import decode_stamp
from halo_core.simulate.dataset import SPLITS, simulate_dataset

GOLDEN = SimulationConfig(n_lrg={"train": 70, "val": 20, "test": 20}, injections_per_lrg=2, lrgs_per_brick=10, seed=5,
                          domain_randomization=True)
GOLDEN_FINGERPRINT = "dd28b2d7b0cefa7b7616393f10cc331ccb697f0244271218992ec7df1f9e58fa"  # measured at e9ef099


def content_fingerprint(root) -> str:
    h = hashlib.sha256()
    for split in SPLITS:
        for path in sorted((root / split).glob("part-*.parquet")):
            table = pq.read_table(path)
            for name in table.column_names:
                h.update(name.encode())
                values = table.column(name).to_pylist()
                if name.endswith("_npz"):
                    for task_id, blob in zip(table.column("task_id").to_pylist(), values):
                        h.update(decode_stamp(blob, source=str(path), task_id=task_id, column=name).tobytes())
                else:
                    h.update(repr(values).encode())
    return h.hexdigest()


@pytest.mark.parametrize("workers", [1, 2])
def test_the_simulated_data_keeps_its_fingerprint(tmp_path, workers):
    simulate_dataset(tmp_path, GOLDEN, workers=workers)
    assert content_fingerprint(tmp_path) == GOLDEN_FINGERPRINT


# sha256 of each split's pairs.f16 when the demo preset's filter reads the golden data: the filter of
# 066af9d (before issue 24 made it faster) wrote these bytes, and a faster decode, preprocess or float16
# cast must write them too (every step is exact IEEE arithmetic or a selection, the same on any CPU)
GOLDEN_SHARDS = {"train": "04cc50cba237ffc416a8721ae1498fdb69461fa36a0a37816f05c8bbc97feb43",
                 "val": "b88a0174de92afeb079899c30e7f0dcc508ef92bb7c64152a8e334c73fe0d1c1",
                 "test": "11be7522c84392566fcf8a2be7073c3efad67f063451b1f5799582c77a2d1b8c"}


def test_the_filter_writes_the_shards_it_always_wrote(tmp_path):
    from halo_core.config import load_preset
    from halo_core.data.filtering import build_filtered_dataset

    simulate_dataset(tmp_path / "raw", GOLDEN)
    build_filtered_dataset(load_preset("demo"), str(tmp_path / "raw"), str(tmp_path / "filtered"), on_ray=False)
    shards = {s: hashlib.sha256((tmp_path / "filtered" / s / "pairs.f16").read_bytes()).hexdigest() for s in SPLITS}
    assert shards == GOLDEN_SHARDS
