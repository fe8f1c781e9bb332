"""The data fingerprint (docs/design.md §9 (run keys)): content of the shards + PreprocessSpec, never paths or build time."""

import shutil

import numpy as np

from halo_core.config import load_preset
from halo_core.data.filtering import build_filtered_dataset
from halo_core.data.preprocess import PreprocessSpec
from halo_core.data.reader import SPLITS
from halo_core.data.shards import PAIRS_FILE, data_fingerprint, fingerprint_shards
from tests.factories import three_splits


def test_same_input_rebuilt_elsewhere_gives_the_same_fingerprint(tmp_path):
    cfg = load_preset("smoke")
    raw = three_splits(tmp_path / "raw", n=8)
    shutil.copytree(raw, tmp_path / "moved")  # same bytes under another absolute path
    build_filtered_dataset(cfg, str(raw), str(tmp_path / "a"))
    build_filtered_dataset(cfg, str(tmp_path / "moved"), str(tmp_path / "b"))  # later: another build time
    assert data_fingerprint(str(tmp_path / "a")) == data_fingerprint(str(tmp_path / "b"))
    other_spec = load_preset("smoke", {"clip_range": [-5, 10]})
    build_filtered_dataset(other_spec, str(raw), str(tmp_path / "c"))
    assert data_fingerprint(str(tmp_path / "c")) != data_fingerprint(str(tmp_path / "a"))


def test_one_changed_pixel_changes_the_fingerprint(tmp_path):
    cfg = load_preset("smoke")
    build_filtered_dataset(cfg, str(three_splits(tmp_path / "raw", n=8)), str(tmp_path / "a"))
    spec = PreprocessSpec.from_config(cfg)
    assert fingerprint_shards(tmp_path / "a", SPLITS, spec) == data_fingerprint(str(tmp_path / "a"))
    pairs = np.memmap(tmp_path / "a" / "test" / PAIRS_FILE, dtype=np.float16, mode="r+")
    pairs[12345] += np.float16(0.5)
    pairs.flush()
    assert fingerprint_shards(tmp_path / "a", SPLITS, spec) != data_fingerprint(str(tmp_path / "a"))
