"""Each check called directly on a good and a bad input: every check here can fail."""

import pytest

from halo_assets.checks import (
    arc_snr_zero_accounted, class_balance, excluded_bricks_absent, finite_pixels, schema_contract, split_integrity,
)
from halo_assets.resources import HaloSettings
from halo_core.config import load_preset
from halo_core.filtering import build_filtered_dataset
from tests.factories import make_paired_table, three_splits, write_split_dirs


def _settings(tmp_path, raw, overrides=()):
    halo = HaloSettings(preset="smoke", overrides=[f"train_path={raw}", *overrides], root_uri=str(tmp_path / "root"))
    build_filtered_dataset(halo.config(), str(raw), halo.uri("filtered_dataset"))
    return halo


@pytest.fixture
def good(tmp_path):
    # ctrl_negative: exactly balanced; with 6 LRGs per split the unpaired halves are a coin toss
    return _settings(tmp_path, three_splits(tmp_path / "raw", n=12), ["sample_construction=ctrl_negative"])


def test_all_data_checks_pass_on_a_clean_dataset(good):
    for check in (schema_contract, split_integrity, excluded_bricks_absent, finite_pixels, class_balance,
                  arc_snr_zero_accounted):
        assert check(halo=good).passed, check.node_def.name


def test_split_integrity_fails_on_a_shared_brick(tmp_path):
    raw = write_split_dirs(tmp_path / "raw", {
        "train": make_paired_table(6, bricks=("1000p010",)),
        "val": make_paired_table(6, seed=1, bricks=("2000p010",), id_prefix="b"),
        "test": make_paired_table(6, seed=2, bricks=("1000p010",), id_prefix="c"),
    })
    result = split_integrity(halo=_settings(tmp_path, raw))
    assert not result.passed and "1000p010" in result.metadata["shared_bricks"].value


def test_excluded_bricks_check_fails_when_the_filter_let_one_through(tmp_path):
    raw = three_splits(tmp_path / "raw", n=12)
    halo = _settings(tmp_path, raw, ["exclude_bricks=[]"])  # built without the exclusion...
    strict = HaloSettings(preset="smoke", overrides=["exclude_bricks=[1000p010]"], root_uri=halo.root_uri)
    assert not excluded_bricks_absent(halo=strict).passed  # ...checked against a config that has it


def test_finite_pixels_fails_when_too_many_rows_are_quarantined(tmp_path):
    raw = three_splits(tmp_path / "raw", n=12, nan_rows=[0, 1, 2])
    result = finite_pixels(halo=_settings(tmp_path, raw))
    assert not result.passed and result.metadata["quarantined"].value == 3


def test_class_balance_fails_when_a_split_has_no_lens(tmp_path):
    raw = write_split_dirs(tmp_path / "raw", {
        "train": make_paired_table(6),
        "val": make_paired_table(6, seed=1, bricks=("2000p010",), id_prefix="b", masked_rows=range(6)),
        "test": make_paired_table(6, seed=2, bricks=("3000p010",), id_prefix="c"),
    })
    assert not class_balance(halo=_settings(tmp_path, raw, ["sample_construction=ctrl_negative"])).passed


def test_schema_contract_fails_on_a_missing_column(tmp_path):
    import pyarrow.parquet as pq

    raw = three_splits(tmp_path / "raw", n=6)
    halo = _settings(tmp_path, raw)
    path = raw / "test" / "part-00000.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["brickname"]), path)
    result = schema_contract(halo=halo)
    assert not result.passed and "brickname" in result.metadata["problems"].value
