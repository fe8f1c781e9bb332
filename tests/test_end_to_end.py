"""The whole graph, materialized in a real (temporary) Dagster instance on the smoke-size dataset."""

import json

import dagster as dg
import pytest

from halo_assets.demo import run_retrain, verdict
from tests.factories import LENIENT_GO_NO_GO

SMOKE_DATA = "simulation={n_lrg: {train: 30, val: 12, test: 16}, injections_per_lrg: 3, lrgs_per_brick: 3, seed: 1}"
# the plan's own paths are the team's S3 prefixes: run it on the embedded data instead
GEN5_AT_SMOKE_SIZE = [SMOKE_DATA, "epochs=1", "batch_size=16", "log_to_wandb=false", "go_no_go.max_quarantine_frac=0.05",
                      "train_path=", "val_path=", "test_path=", "checkpoint_dir="]


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _checks(evaluations):
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in evaluations}


def test_smoke_run_passing_every_gate_promotes_the_model(tmp_path, instance):
    result = run_retrain("smoke", LENIENT_GO_NO_GO, str(tmp_path), instance)
    go, evaluations = verdict(result)
    checks = _checks(evaluations)
    assert result.success and go, checks
    # trained_model's and the config review's (config_*) are WARN advisories
    blocking = {k: v for k, v in checks.items() if k[0] != "trained_model" and not k[1].startswith("config_")}
    assert all(blocking.values()) and len(blocking) == 19 and len(checks) == 28
    # listed under the job and on the Overview timeline: the UI filters a job's runs by this tag
    run = instance.get_run_by_id(result.run_id)
    assert run.remote_job_origin is not None and run.job_name == "retrain_job"
    assert run.tags_for_storage()[".dagster/repository"] == "__repository__@halo_assets.definitions"
    assert {e.partition for e in evaluations} == {"smoke"}  # each check's history is the profile's own
    assert checks[("promoted_model", "not_worse_than_production")]  # the first promotion: nothing to compare
    registry = tmp_path / "smoke" / "promoted_model"
    version = json.loads((registry / "production.json").read_text())["version"]
    card = json.loads((registry / "versions" / version / "model.json").read_text())
    assert card["input_channels"] == 3 and "test_metrics" in card and "calibration" in card
    assert card["go_no_go"]["go"] and card["champion_challenger"]["skipped"].startswith("first promotion")
    assert (tmp_path / "smoke" / "evaluation_report" / "report.html").read_text().startswith("<!doctype html>")


def test_gen5_prime_ends_no_go_because_it_needs_a_control_stamp(tmp_path, instance):
    result = run_retrain("gen5_prime", GEN5_AT_SMOKE_SIZE, str(tmp_path), instance)
    go, evaluations = verdict(result)
    checks = _checks(evaluations)
    assert not go
    assert checks[("evaluation_report", "deployable_without_control")] is False
    assert checks[("shortcut_gates", "shortcut_core_auc")] is False  # (stamp, ctrl) vs (ctrl, ctrl): trivial
    data_checks = {k: v for k, v in checks.items()
                   if k[0] in ("paired_stamps", "filtered_dataset") and not k[1].startswith("config_")}
    assert len(data_checks) == 6 and all(data_checks.values())  # the data is fine; the model is not
    assert checks[("filtered_dataset", "config_input_deployable")] is False  # said before training, as a WARN
    assert not (tmp_path / "gen5_prime" / "promoted_model").exists()
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "evaluation_report" in materialized and "promoted_model" not in materialized
