import numpy as np
import pyarrow as pa
import pytest

from halo_core.config import load_preset
from halo_core.errors import ContractError
from halo_core.filtering import build_filtered_dataset
from halo_core.shards import open_split, read_manifest
from tests.factories import make_paired_table, three_splits, write_split_dirs

CFG = load_preset("smoke")


def _build(tmp_path, root, cfg=CFG):
    return build_filtered_dataset(cfg, str(root), str(tmp_path / "filtered"))


def test_bad_rows_are_quarantined_and_counted_by_reason(tmp_path):
    root = three_splits(tmp_path / "raw", n=12, nan_rows=[3, 11], corrupt_rows=[4], wrong_shape_rows=[5],
                        missing_band_rows=[6])
    report = _build(tmp_path, root)
    train = report.splits["train"]
    assert dict(train.counts) == {"nonfinite_pixels": 2, "corrupt_npz": 1, "bad_shape": 1, "missing_band": 1}
    assert {q["task_id"] for q in train.quarantined} == {"a00003", "a00011", "a00004", "a00005", "a00006"}
    assert all("part-00000.parquet" in q["source"] for q in train.quarantined)
    assert train.rows_kept == 12 - 5
    shards = open_split(report.out_dir, "train")
    assert len(shards) == 7 and np.isfinite(shards.pairs).all()
    assert "a00003" not in set(shards.meta["task_id"])
    manifest = read_manifest(report.out_dir)
    assert manifest["splits"]["train"]["counts"]["nonfinite_pixels"] == 2


def test_excluded_bricks_and_quality_cuts_are_dropped_and_counted(tmp_path):
    root = three_splits(tmp_path / "raw", n=12)
    report = _build(tmp_path, root, load_preset("smoke", {"exclude_bricks": ["1001p010"]}))
    assert report.splits["train"].counts["excluded_brick"] == 6
    assert "1001p010" not in set(open_split(report.out_dir, "train").meta["brickname"])


def test_duplicate_task_ids_are_quarantined(tmp_path):
    train = make_paired_table(6, id_prefix="a")
    root = write_split_dirs(tmp_path / "raw", {
        "train": train,
        "val": pa.concat_tables([make_paired_table(4, seed=1, bricks=("2000p010",), id_prefix="b"), train.slice(0, 2)]),
        "test": make_paired_table(4, seed=2, bricks=("3000p010",), id_prefix="c"),
    })
    report = _build(tmp_path, root)
    assert report.splits["val"].counts["duplicate_task_id"] == 2
    assert {q["task_id"] for q in report.splits["val"].quarantined} == {"a00000", "a00001"}


def test_empty_split_is_an_error_naming_the_split(tmp_path):
    root = write_split_dirs(tmp_path / "raw", {
        "train": make_paired_table(4),
        "val": make_paired_table(4, seed=1, bricks=("2000p010",), id_prefix="b", nan_rows=range(4)),
        "test": make_paired_table(4, seed=2, bricks=("3000p010",), id_prefix="c"),
    })
    with pytest.raises(ContractError, match=r"split 'val' is empty after filtering.*nonfinite_pixels"):
        _build(tmp_path, root)


def test_missing_split_is_an_error(tmp_path):
    root = write_split_dirs(tmp_path / "raw", {"train": make_paired_table(4), "val": make_paired_table(4, seed=1)})
    with pytest.raises(ContractError, match=r"split\(s\) \['test'\] have no parquet files"):
        _build(tmp_path, root)


def test_brick_in_two_splits_is_reported(tmp_path):
    root = write_split_dirs(tmp_path / "raw", {
        "train": make_paired_table(6, bricks=("1000p010",)),
        "val": make_paired_table(6, seed=1, bricks=("1000p010",), id_prefix="b"),  # leaks the train brick
        "test": make_paired_table(6, seed=2, bricks=("3000p010",), id_prefix="c"),
    })
    report = _build(tmp_path, root)
    assert not report.integrity.ok
    assert report.integrity.shared_bricks["train|val"] == ["1000p010"]


def test_masked_arcs_are_kept_and_accounted(tmp_path):
    root = three_splits(tmp_path / "raw", n=8, masked_rows=[0, 1])
    train = _build(tmp_path, root).splits["train"]
    assert train.arc_snr_zero_kept == 2 and train.identical_pairs_kept == 2 and train.identical_pairs_with_arc == 0
