import numpy as np
import pyarrow as pa
import pytest

from halo_core import uris
from halo_core.config import load_preset
from halo_core.data.filtering import build_filtered_dataset
from halo_core.data.shards import open_split, read_manifest, to_float16
from halo_core.errors import BuildLockedError, ContractError, StorageError
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


def test_halo_filter_exits_non_zero_on_leaking_splits_and_keeps_the_previous_dataset(tmp_path, capsys):
    from halo_core.cli import main

    good = three_splits(tmp_path / "good", n=4)
    leaking = write_split_dirs(tmp_path / "leaking", {
        "train": make_paired_table(6, bricks=("1000p010",)),
        "val": make_paired_table(6, seed=1, bricks=("1000p010",), id_prefix="b"),
        "test": make_paired_table(6, seed=2, bricks=("3000p010",), id_prefix="c"),
    })
    out = str(tmp_path / "filtered")
    common = ["filter", "--preset", "smoke", "--set", "filter_on_ray=false", "--out", out]
    assert main([*common, "--data", str(good)]) == 0
    before = read_manifest(out)
    capsys.readouterr()
    assert main([*common, "--data", str(leaking)]) == 2
    err = capsys.readouterr().err
    assert "the splits leak" in err and "'train|val': ['1000p010']" in err and err.count("\n") == 1
    assert read_manifest(out) == before


def test_masked_arcs_are_kept_and_accounted(tmp_path):
    root = three_splits(tmp_path / "raw", n=8, masked_rows=[0, 1])
    train = _build(tmp_path, root).splits["train"]
    assert train.arc_snr_zero_kept == 2 and train.identical_pairs_kept == 2 and train.identical_pairs_with_arc == 0


def _failing_source(tmp_path):
    """Valid train and test, a val split whose every row is NaN: the build fails after writing train."""
    return write_split_dirs(tmp_path / "bad", {
        "train": make_paired_table(4),
        "val": make_paired_table(4, seed=1, bricks=("2000p010",), id_prefix="b", nan_rows=range(4)),
        "test": make_paired_table(4, seed=2, bricks=("3000p010",), id_prefix="c"),
    })


def test_a_failed_rebuild_leaves_the_last_good_dataset_whole(tmp_path):
    (tmp_path / ".filtered.v-20260101T000000-0123abcd").mkdir()  # what a SIGKILLed build leaves: removed by the next one
    good = _build(tmp_path, three_splits(tmp_path / "raw", n=8))
    live = (tmp_path / "filtered").readlink().name
    before = read_manifest(good.out_dir)
    with pytest.raises(ContractError, match="split 'val' is empty"):
        _build(tmp_path, _failing_source(tmp_path))
    assert read_manifest(good.out_dir) == before and len(open_split(good.out_dir, "train")) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [".filtered.lock", live, "bad", "filtered", "raw"]  # no stage left


def test_out_equal_to_inside_or_containing_the_data_is_refused_and_nothing_is_deleted(tmp_path):
    root = three_splits(tmp_path / "raw", n=4)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    for out in (root, root / "train" / "filtered", tmp_path, root / ".." / "raw"):
        with pytest.raises(StorageError, match="the output (is|contains|lies inside) the input"):
            build_filtered_dataset(CFG, str(root), str(out))
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files


def test_an_existing_folder_that_is_not_a_build_is_never_replaced(tmp_path):
    (tmp_path / "filtered").mkdir()
    (tmp_path / "filtered" / "thesis.tex").write_text("years of work")
    with pytest.raises(StorageError, match="holds no manifest.json; refusing to replace"):
        _build(tmp_path, three_splits(tmp_path / "raw", n=4))
    assert (tmp_path / "filtered" / "thesis.tex").read_text() == "years of work"


def test_a_second_builder_of_the_same_out_fails_with_a_clear_message(tmp_path):
    root = three_splits(tmp_path / "raw", n=4)
    with uris.build_lock(str(tmp_path / "filtered")):  # the first builder, still running
        with pytest.raises(BuildLockedError, match=r"another build holds .*\.filtered\.lock"):
            _build(tmp_path, root)
    assert not (tmp_path / "filtered").exists()
    assert len(open_split(_build(tmp_path, root).out_dir, "test")) == 4  # the lock is free again


def test_a_truncated_or_empty_parquet_is_a_one_line_error_naming_the_file(tmp_path):
    root = three_splits(tmp_path / "raw", n=4)
    path = root / "val" / "part-00000.parquet"
    for content in (path.read_bytes()[:100], b""):
        path.write_bytes(content)
        with pytest.raises(ContractError, match=r"val/part-00000.parquet: not a readable parquet file") as err:
            _build(tmp_path, root)
        assert "\n" not in str(err.value)


def test_a_band_stored_as_strings_is_quarantined_not_fatal(tmp_path):
    import io

    table = make_paired_table(6)
    buf = io.BytesIO()
    np.savez_compressed(buf, image_g=np.full((64, 64), "0.1"), image_r=np.zeros((64, 64), np.float32),
                        image_z=np.zeros((64, 64), np.float32))
    blobs = table["stamp_npz"].to_pylist()
    blobs[2] = buf.getvalue()
    table = table.set_column(table.schema.get_field_index("stamp_npz"), "stamp_npz", pa.array(blobs, pa.binary()))
    root = write_split_dirs(tmp_path / "raw", {
        "train": table, "val": make_paired_table(4, seed=1, bricks=("2000p010",), id_prefix="b"),
        "test": make_paired_table(4, seed=2, bricks=("3000p010",), id_prefix="c")})
    report = _build(tmp_path, root)
    assert dict(report.splits["train"].counts) == {"bad_dtype": 1} and report.splits["train"].rows_kept == 5


def test_shards_round_to_float16_as_numpy_does():
    """The shards' float16 is numpy's, bit for bit: ties to even, subnormals, overflow to inf, over a
    stride of every float32 bit pattern (the shards stayed byte-identical when the cast moved to torch)."""
    bits = np.arange(0, 2**32, 9_973, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ties = np.float32(1) + np.float32(2.0**-11) * np.arange(8, dtype=np.float32)  # halfway between float16s
    x = np.concatenate([bits[np.isfinite(bits)], ties, np.float32([65520, -65520, 2.0**-25, -0.0])])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    assert np.array_equal(to_float16(x).view(np.uint16), want.view(np.uint16))
