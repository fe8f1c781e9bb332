"""The survey assets in a real Dagster instance: brick partitions registered by the sensor, the
catalogue's checks, the selection function in the graph, and a missing production model."""

import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from halo_assets.assets import versioned
from halo_assets.definitions import defs
from halo_assets.resources import DEPLOYMENT, PROFILES, HaloSettings
from halo_assets.survey import BRICKS, candidate_catalog, new_cutouts_sensor
from halo_core.evaluation.calibration import Calibration
from halo_core.model.registry import add_version, set_production
from halo_core.survey.candidates import brick_index, read_catalog
from tests.factories import make_paired_table


def _cutouts(folder, name, bricks, seed, nan_rows=()):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(make_paired_table(12, seed=seed, bricks=bricks, lrgs_per_brick=2, id_prefix=name,
                                     nan_rows=nan_rows), folder / f"{name}.parquet")


@pytest.fixture
def halo(tmp_path):
    _cutouts(tmp_path / "survey", "dr1", ("1000p010", "1001p010"), 0)
    return HaloSettings(preset="smoke", overrides=[f"score_path={tmp_path / 'survey'}"], root_uri=str(tmp_path / "root"))


def _promote(trained, halo, threshold=0.5) -> str:
    """A GO version of the trained model in the profile's registry, made production; its version."""
    registry = halo.uri("promoted_model")
    version = add_version(registry, trained.model_path, {
        "calibration": Calibration(1.0, 0.0, 0.5, 10).to_dict(), "go_no_go": {"go": True, "failed": []},
        "test_metrics": {"tpr_at_fpr": [{"fpr": 1e-2, "tpr": 0.9, "threshold": threshold}]}})
    set_production(registry, version, reason="test")
    return version


def _materialize(instance, halo, brick):
    # the code location's asset, with its code version, so its staleness is the UI's
    return dg.materialize(versioned([candidate_catalog], DEPLOYMENT.config()), partition_key=brick, instance=instance, resources={"halo": halo},
                          raise_on_error=False)


def test_sensor_registers_new_bricks_and_requests_only_them(halo, tmp_path):
    with dg.instance_for_test() as instance:
        first = new_cutouts_sensor(dg.build_sensor_context(instance=instance, resources={"halo": halo}))
        assert sorted(r.partition_key for r in first.run_requests) == ["1000p010", "1001p010"]
        assert first.dynamic_partitions_requests[0].partition_keys == ["1000p010", "1001p010"]
        instance.add_dynamic_partitions(BRICKS.name, ["1000p010", "1001p010"])
        cursor = dg.build_sensor_context(instance=instance, resources={"halo": halo})
        new_cutouts_sensor(cursor)
        again = new_cutouts_sensor(dg.build_sensor_context(instance=instance, cursor=cursor.cursor, resources={"halo": halo}))
        assert isinstance(again, dg.SkipReason)
        _cutouts(tmp_path / "survey" / "dr2", "dr2", ("2000p020",), 1)  # a new release, one new brick
        later = new_cutouts_sensor(dg.build_sensor_context(instance=instance, cursor=cursor.cursor, resources={"halo": halo}))
        assert [r.partition_key for r in later.run_requests] == ["2000p020"]
        assert later.dynamic_partitions_requests[0].partition_keys == ["2000p020"]


def test_without_a_production_model_the_catalogue_fails_saying_so(halo):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(BRICKS.name, ["1000p010"])
        result = _materialize(instance, halo, "1000p010")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no production model" in failure.step_failure_data.error.message


def test_a_brick_is_scored_checked_and_goes_stale_with_a_new_production_model(ray_local, trained, paired_dir, tmp_path):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    # the simulator's test split: the cutouts the smoke model was trained for (on the factories' toy
    # images it saturates, and binary_score_frac rightly fails)
    survey = tmp_path / "sim"
    survey.mkdir()
    for i, part in enumerate(sorted((Path(paired_dir) / "test").glob("*.parquet"))):
        shutil.copy(part, survey / f"part-{i}.parquet")
    halo = HaloSettings(preset="smoke", overrides=[f"score_path={survey}"], root_uri=str(tmp_path / "root"))
    brick, files = next(iter(brick_index([str(survey)]).items()))
    rows = pq.read_table(files[0], columns=["brickname"])["brickname"].to_pylist().count(brick)
    version = _promote(trained, halo)
    # a promotion run of the profile whose production model the catalogue scores with (its body is not under test)
    profile = DEPLOYMENT.own_profile()
    promotion = dg.asset(name="promoted_model", partitions_def=PROFILES)(lambda: dg.MaterializeResult())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROFILES.name, [profile])
        dg.materialize([promotion], instance=instance, partition_key=profile)
        instance.add_dynamic_partitions(BRICKS.name, [brick])
        result = _materialize(instance, halo, brick)
        assert result.success
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(checks) == {"share_above_threshold", "binary_score_frac", "refused_share"}
        assert checks["refused_share"].passed and checks["binary_score_frac"].passed
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["rows"].value == rows and metadata["model_version"].value == version
        assert (tmp_path / "root" / "smoke" / "candidate_catalog" / "_gallery" / f"{brick}.html").is_file()
        assert set(read_catalog(str(tmp_path / "root" / "smoke" / "candidate_catalog"))["brick"]) == {brick}

        key = dg.AssetKey("candidate_catalog")
        def status():
            resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
            return resolver.get_status(key, brick)
        assert status() == StaleStatus.FRESH
        # a new production model: a run materializes promoted_model again (its body is not under test here)
        dg.materialize([promotion], instance=instance, partition_key=profile)
        assert status() == StaleStatus.STALE


def test_refused_cutouts_fail_the_error_check(ray_local, trained, halo, tmp_path):
    _cutouts(tmp_path / "survey", "bad", ("3000p030",), 2, nan_rows=(0, 2, 4, 6))
    _promote(trained, halo)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(BRICKS.name, ["3000p030"])
        result = _materialize(instance, halo, "3000p030")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["refused_share"].passed and checks["refused_share"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["refused_share"].metadata["observed"].value == pytest.approx(4 / 12, abs=1e-4)  # shown to 4 digits


def test_selection_function_follows_promotion_in_the_retrain_job():
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("selection_function")).parent_keys == {dg.AssetKey("promoted_model")}
    assert graph.get(dg.AssetKey("candidate_catalog")).parent_keys == {dg.AssetKey("promoted_model")}
    nodes = {n.name for n in defs.resolve_job_def("retrain_job").graph.nodes}
    assert "selection_function" in nodes and "candidate_catalog" not in nodes
    assert defs.resolve_sensor_def("new_cutouts_sensor").job_name == "catalog_job"


def test_selection_function_without_a_measured_threshold_says_not_measurable(trained, tmp_path):
    from halo_assets.survey import selection_function

    halo = HaloSettings(preset="smoke", root_uri=str(tmp_path))
    _promote(trained, halo, threshold=None)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROFILES.name, ["smoke"])
        result = dg.materialize([selection_function], resources={"halo": halo}, instance=instance, partition_key="smoke")
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["completeness"].value.startswith("not measurable")


def test_a_selection_function_killed_at_its_commit_leaves_the_previous_one_whole(ray_local, trained, tmp_path):
    """tests/test_outputs.py's kill test for the one asset the GO run cannot stop (smoke has no threshold):
    measured once on one cell, then stopped at the commit of its second measurement."""
    from halo_assets.assets import ASSET_OUTPUTS
    from halo_assets.survey import selection_function
    from tests.killing import killed_at_commit

    one_cell = ["selection_function.theta_e_arcsec=[1.25]", "selection_function.psf_fwhm_arcsec=[1.1]",
                "selection_function.psfdepth_r_mag=[24.6]", "selection_function.source_r_mag=[21.0]",
                "selection_function.injections_per_cell=4"]
    halo = HaloSettings(preset="smoke", overrides=one_cell, root_uri=str(tmp_path))
    _promote(trained, halo)
    out = tmp_path / "smoke" / "selection_function"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROFILES.name, ["smoke"])

        def materialize():
            return dg.materialize([selection_function], resources={"halo": halo}, instance=instance, partition_key="smoke")

        first = materialize()
        assert first.get_asset_materialization_events()[0].materialization.metadata["cells"].value == 1
        assert (out / "selection_function.json").is_file()
        killed_at_commit(materialize, out, ASSET_OUTPUTS["selection_function"])
