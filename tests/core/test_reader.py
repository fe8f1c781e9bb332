import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from halo_core.data.reader import read_split, split_files
from halo_core.errors import ContractError
from tests.factories import make_paired_table, three_splits


def _ids(root, split):
    return sorted(i for _, t in read_split(str(root), split) for i in t["task_id"].to_pylist())


def test_three_layouts_give_the_same_rows(tmp_path):
    split_dirs = three_splits(tmp_path / "dirs", n=4)
    tables = {s: pq.read_table(split_dirs / s / "part-00000.parquet") for s in ("train", "val", "test")}
    hive = tmp_path / "hive"
    for s, t in tables.items():
        (hive / f"region_split={s}").mkdir(parents=True)
        pq.write_table(t.slice(0, 2), hive / f"region_split={s}" / "a.parquet")
        pq.write_table(t.slice(2), hive / f"region_split={s}" / "b.parquet")  # several files per split
    column = tmp_path / "column"
    column.mkdir()
    merged = pa.concat_tables([t.append_column("region_split", pa.array([s] * t.num_rows)) for s, t in tables.items()])
    pq.write_table(merged, column / "all.parquet")
    for s in ("train", "val", "test"):
        assert _ids(split_dirs, s) == _ids(hive, s) == _ids(column, s) == sorted(tables[s]["task_id"].to_pylist())
    assert len(split_files(str(hive))["train"]) == 2


def test_missing_required_column_names_file_and_column(tmp_path):
    root = three_splits(tmp_path, n=3)
    path = root / "val" / "part-00000.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["arc_snr"]), path)
    with pytest.raises(ContractError, match=r"val/part-00000.parquet: missing required columns \['arc_snr'\]"):
        list(read_split(str(root), "val"))


def test_file_outside_split_folders_needs_a_split_column(tmp_path):
    pq.write_table(make_paired_table(2), tmp_path / "loose.parquet")
    with pytest.raises(ContractError, match="loose.parquet: not in a split folder"):
        list(read_split(str(tmp_path), "train"))


def test_no_parquet_at_all_is_an_error(tmp_path):
    with pytest.raises(ContractError, match="no parquet files"):
        split_files(str(tmp_path))


def test_a_dataset_stored_under_a_folder_named_like_a_split_is_read_relative_to_its_root(tmp_path):
    root = three_splits(tmp_path / "val" / "test" / "paired", n=4)
    files = split_files(str(root))
    assert {s: len(f) for s, f in files.items()} == {"train": 1, "val": 1, "test": 1}
    assert _ids(root, "train") == sorted(pq.read_table(root / "train" / "part-00000.parquet")["task_id"].to_pylist())
