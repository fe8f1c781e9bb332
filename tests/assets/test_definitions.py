import json

import dagster as dg

from halo_assets.assets import GPU_OP_TAGS
from halo_assets.definitions import defs

ASSETS = ["paired_stamps", "filtered_dataset", "trained_model", "calibrated_model", "evaluation_report", "promoted_model"]


def _graph():
    return defs.resolve_asset_graph()


def test_the_graph_has_the_designed_assets_in_order():
    graph = _graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        *ASSETS, "shortcut_gates", "real_validation", "candidate_catalog", "candidate_gallery", "selection_function",
        "real_lrg_cutouts"}
    for upstream, downstream in zip(ASSETS, ASSETS[1:]):
        assert dg.AssetKey(upstream) in graph.get(dg.AssetKey(downstream)).parent_keys
    # the gates read the filtered data and hold back promotion, not training
    assert graph.get(dg.AssetKey("shortcut_gates")).parent_keys == {dg.AssetKey("filtered_dataset")}
    assert dg.AssetKey("shortcut_gates") in graph.get(dg.AssetKey("promoted_model")).parent_keys
    # the fetched real LRG cutouts feed the injected mode of paired_stamps
    assert dg.AssetKey("real_lrg_cutouts") in graph.get(dg.AssetKey("paired_stamps")).parent_keys
    # real validation reads the report's thresholds; promotion does not wait for it
    # evidence runs on a NO-GO too: real validation hangs off the calibrated model, not behind the report's checks
    assert graph.get(dg.AssetKey("real_validation")).parent_keys == {dg.AssetKey("calibrated_model")}


def test_training_is_the_only_gpu_step():
    job = defs.resolve_job_def("retrain_job")
    for name in [*ASSETS, "shortcut_gates", "selection_function"]:
        assert (job.graph.node_named(name).definition.pool == "gpu") == (name == "trained_model"), name
    tags = job.graph.node_named("trained_model").definition.tags
    assert json.loads(tags["dagster-k8s/config"]) == GPU_OP_TAGS["dagster-k8s/config"]  # stored as JSON
    limits = GPU_OP_TAGS["dagster-k8s/config"]["container_config"]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_data_and_go_no_go_checks_are_blocking():
    specs = {(s.asset_key.to_user_string(), s.name): s for c in defs.asset_checks for s in c.check_specs}
    blocking = {k for k, s in specs.items() if s.blocking}
    for key in [("filtered_dataset", "split_integrity"), ("filtered_dataset", "excluded_bricks_absent"),
                ("filtered_dataset", "finite_pixels"), ("evaluation_report", "test_auroc"),
                ("evaluation_report", "deployable_without_control"), ("paired_stamps", "schema_contract"),
                ("shortcut_gates", "selection_null"), ("evaluation_report", "core_perturbation"),
                ("evaluation_report", "arc_localised_focus"), ("evaluation_report", "independent_renderer_shift")]:
        assert key in blocking, key
    # data-level probes are evidence (docs/design.md §8 (trust)): reported, never blocking
    assert not blocking & {("shortcut_gates", f"shortcut_{g}_auc") for g in ("core", "radial", "metadata")}
    # the off-centre perturbation is evidence too: light 0.8" from the centre looks like a compact lensed image
    assert ("evaluation_report", "core_perturbation_offset") in specs.keys() - blocking


def test_weekly_schedule_runs_the_retrain_job():
    schedule = defs.resolve_schedule_def("weekly_retrain")
    assert schedule.job_name == "retrain_job" and schedule.cron_schedule == "0 6 * * 1"


def test_sensors_are_registered():
    names = {s.name for s in defs.sensors}
    assert {"new_data_sensor", "halo_alerts"} <= names
    assert defs.resolve_sensor_def("new_data_sensor").job_name == "retrain_job"


def test_halo_env_selects_where_artifacts_go(monkeypatch):
    import pytest

    from halo_assets.resources import DEFAULT_ROOT, halo_settings_for

    assert halo_settings_for("local").root_uri == DEFAULT_ROOT
    monkeypatch.setenv("HALO_ROOT", "s3://darkhaloscope/halo")
    prod = halo_settings_for("prod").process_config_and_initialize()  # what Dagster does at run time
    assert prod.preset == "recommended"
    assert prod.uri("trained_model") == "s3://darkhaloscope/halo/recommended/trained_model"
    with pytest.raises(ValueError, match="HALO_ENV"):
        halo_settings_for("staging")


def test_dataset_builds_share_a_pool_that_every_instance_limits_to_one():
    """A sensor run and a scheduled run queue for the dataset steps instead of writing one location at once."""
    from pathlib import Path

    import yaml

    job = defs.resolve_job_def("retrain_job")
    pools = {name: job.graph.node_named(name).definition.pool for name in ASSETS}
    assert pools["paired_stamps"] == pools["filtered_dataset"] == "dataset_build"
    assert [n for n, p in pools.items() if p == "dataset_build"] == ["paired_stamps", "filtered_dataset"]
    for instance_yaml in ("dagster.yaml", "dagster.local.yaml"):
        config = yaml.safe_load((Path(__file__).parents[2] / "deploy" / instance_yaml).read_text())
        assert config["concurrency"]["pools"]["default_limit"] == 1, instance_yaml


def test_every_check_says_in_one_line_what_it_means():
    """The UI shows a check's description beside its result, and the demo's table prints it: one short line."""
    from halo_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    descriptions = {k.to_user_string(): graph.get_check_spec(k).description for k in graph.asset_check_keys}
    assert len(descriptions) >= 40
    bad = {k: d for k, d in descriptions.items() if not d or "\n" in d or len(d) > 110}
    assert not bad, bad
