import json

import pyarrow as pa
import pyarrow.parquet as pq

from halo_core.config import load_preset
from halo_core.data.filtering import build_filtered_dataset
from halo_core.data.reader import SPLITS
from halo_core.data.shards import MANIFEST_FILE
from tests.factories import make_paired_table

TIMING = {"seconds", "out_dir"}


def _dataset(root):
    """Train in four files with faults, one task_id repeated across files (the cross-file duplicate
    a file filtered on its own cannot see)."""
    train = [make_paired_table(40, seed=s, bricks=(f"10{s}0p010", f"10{s}1p010"), id_prefix=f"a{s}",
                               nan_rows=(3,), corrupt_rows=(5,), masked_rows=(7,)) for s in range(4)]
    dup = train[3].to_pydict()
    dup["task_id"][10] = train[0]["task_id"][12].as_py()
    train[3] = pa.table(dup, schema=train[3].schema)
    for split, tables in {"train": train, "val": [make_paired_table(30, seed=8, bricks=("2000p010",), id_prefix="b")],
                          "test": [make_paired_table(30, seed=9, bricks=("3000p010",), id_prefix="c")]}.items():
        (root / split).mkdir(parents=True)
        for i, table in enumerate(tables):
            pq.write_table(table, root / split / f"part-{i:05d}.parquet")
    return root


def test_ray_filter_writes_the_single_process_bytes(ray_local, tmp_path):
    raw = _dataset(tmp_path / "raw")
    cfg = load_preset("smoke")
    serial = build_filtered_dataset(cfg, str(raw), str(tmp_path / "serial"), on_ray=False)
    parallel = build_filtered_dataset(cfg, str(raw), str(tmp_path / "ray"), on_ray=True)
    assert serial.splits["train"].counts["duplicate_task_id"] == 1 and serial.splits["train"].counts["corrupt_npz"] == 4
    for split in SPLITS:
        for name in ("pairs.f16", "meta.parquet"):
            assert (tmp_path / "serial" / split / name).read_bytes() == (tmp_path / "ray" / split / name).read_bytes()
    manifests = [json.loads((tmp_path / d / MANIFEST_FILE).read_text()) for d in ("serial", "ray")]
    for m in manifests:
        for key in TIMING:
            m.pop(key)
    assert manifests[0] == manifests[1]
    assert parallel.splits["train"].rows_kept == serial.splits["train"].rows_kept > 0


def test_where_ray_cannot_win_the_build_stays_in_one_process_and_says_why(tmp_path, caplog, monkeypatch):
    import logging

    import halo_core.data.filtering as filtering

    raw = _dataset(tmp_path / "raw")
    cfg = load_preset("smoke", {"filter_on_ray": True})
    monkeypatch.delenv("HALO_RAY_ADDRESS", raising=False)
    assert "CPU(s) here" in filtering.single_process_reason(str(raw), 2)
    assert "rows; below" in filtering.single_process_reason(str(raw), 8)  # 220 rows
    with caplog.at_level(logging.INFO):
        build_filtered_dataset(cfg, str(raw), str(tmp_path / "out"), num_cpus=2)  # no Ray started
    assert "filtering in this process, not on Ray: 2 CPU(s) here" in caplog.text
    assert "halo filter: 6/6 files" in caplog.text  # the progress helper's lines, when not on a terminal
