"""Profiles as partitions, code versions and data versions, over a real Dagster instance: what makes
the UI show an asset as unsynced, and what keeps two profiles' histories apart."""

import shutil

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver  # the webserver's staleness, without a server

from halo_assets.assets import filtered_dataset, paired_stamps, versioned
from halo_assets.resources import PROFILES, HaloSettings
from halo_core.config import load_preset
from tests.factories import three_splits

STALE, FRESH = StaleStatus.STALE, StaleStatus.FRESH
DATA = [dg.AssetKey("paired_stamps"), dg.AssetKey("filtered_dataset")]


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(PROFILES.name, ["smoke", "demo"])
        yield inst


def _materialize(instance, halo, profile, cfg=None, selection=None):
    assets = versioned([paired_stamps, filtered_dataset], cfg or load_preset("smoke"))
    result = dg.materialize(assets, instance=instance, partition_key=profile, resources={"halo": halo},
                            selection=selection)
    return {m.asset_key.to_user_string(): m.materialization for m in result.get_asset_materialization_events()}


def _status(instance, key, profile, cfg=None):
    assets = versioned([paired_stamps, filtered_dataset], cfg or load_preset("smoke"))
    return get_stale_status_resolver(instance, assets).get_status(dg.AssetKey(key), profile)


def test_two_profiles_keep_separate_histories_and_folders(tmp_path, instance):
    halo = HaloSettings(preset="recommended", overrides=[f"train_path={three_splits(tmp_path / 'raw', n=6)}"],
                        root_uri=str(tmp_path / "root"))
    smoke = _materialize(instance, halo, "smoke")
    demo = _materialize(instance, halo, "demo")  # the partition, not the resource's preset, picks the profile
    assert smoke["filtered_dataset"].partition == "smoke" and demo["filtered_dataset"].partition == "demo"
    assert smoke["filtered_dataset"].metadata["uri"].value == str(tmp_path / "root" / "smoke" / "filtered_dataset")
    assert demo["filtered_dataset"].metadata["uri"].value == str(tmp_path / "root" / "demo" / "filtered_dataset")
    latest = instance.get_latest_materialization_event(dg.AssetKey("filtered_dataset"))
    assert latest.asset_materialization.partition == "demo"
    by_partition = instance.get_materialized_partitions(dg.AssetKey("filtered_dataset"))
    assert by_partition == {"smoke", "demo"}
    assert not (tmp_path / "root" / "recommended").exists()


def test_new_input_data_new_code_or_weight_config_make_the_dataset_unsynced(tmp_path, instance):
    raw = three_splits(tmp_path / "raw", n=6)
    halo = HaloSettings(preset="smoke", overrides=[f"train_path={raw}"], root_uri=str(tmp_path / "root"))
    first = _materialize(instance, halo, "smoke")
    assert first["paired_stamps"].metadata["data_fingerprint"].value == first["paired_stamps"].tags[
        "dagster/data_version"]
    assert _status(instance, "filtered_dataset", "smoke") == FRESH

    # the same bytes again: same fingerprint, so nothing downstream is out of date
    again = _materialize(instance, halo, "smoke", selection=[DATA[0]])
    assert again["paired_stamps"].tags["dagster/data_version"] == first["paired_stamps"].tags["dagster/data_version"]
    assert _status(instance, "filtered_dataset", "smoke") == FRESH

    # one file with other content (same name): new data version, the dataset is unsynced
    other = three_splits(tmp_path / "other", n=6, core_boost=0.5)
    shutil.copy(other / "train" / "part-00000.parquet", raw / "train" / "part-00000.parquet")
    _materialize(instance, halo, "smoke", selection=[DATA[0]])
    assert _status(instance, "filtered_dataset", "smoke") == STALE
    _materialize(instance, halo, "smoke")
    assert _status(instance, "filtered_dataset", "smoke") == FRESH

    # a key the filter reads changes its code version; a training key or a threshold does not
    def after(change):
        cfg = load_preset("smoke", change)
        return _status(instance, "paired_stamps", "smoke", cfg), _status(instance, "filtered_dataset", "smoke", cfg)

    assert after({"clip_range": [-5.0, 30.0]}) == (FRESH, STALE)
    assert after({"simulation": {"seed": 7}}) == (STALE, FRESH)  # and its new data would follow downstream
    assert after({"learning_rate": 3e-4}) == after({"go_no_go": {"min_test_auroc": 0.5}}) == (FRESH, FRESH)
    assert _status(instance, "filtered_dataset", "demo") == StaleStatus.MISSING  # the other profile's own history


def test_code_versions_follow_halos_release_and_the_config_each_asset_reads():
    from halo_assets import assets
    from halo_core import __version__

    def versions(cfg):
        return {a.key.to_user_string(): a.specs_by_key[a.key].code_version
                for a in versioned(dg.load_assets_from_modules([assets]), cfg)}

    base = versions(load_preset("smoke"))
    assert all(v.startswith(f"{__version__}-") for v in base.values())  # the release, never a git commit
    changed = {k for k, v in versions(load_preset("smoke", {"learning_rate": 3e-4})).items() if v != base[k]}
    assert changed == {"trained_model", "shortcut_gates", "calibrated_model", "evaluation_report", "promoted_model"}
    changed = {k for k, v in versions(load_preset("smoke", {"calibration": "temperature"})).items() if v != base[k]}
    assert changed == {"shortcut_gates", "calibrated_model", "evaluation_report", "promoted_model"}


def test_simulated_stamps_record_the_fingerprint_of_what_was_simulated(tmp_path, instance):
    def version(overrides):
        halo = HaloSettings(preset="smoke", overrides=overrides, root_uri=str(tmp_path / "root"))
        return _materialize(instance, halo, "smoke", selection=[DATA[0]])["paired_stamps"].tags["dagster/data_version"]

    first = version([])
    assert version([]) == first  # simulated again from the same seed: the same bytes
    assert version(["simulation.seed=2"]) != first
