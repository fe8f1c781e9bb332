"""The whole graph, materialized in a real (temporary) Dagster instance on the smoke-size dataset."""

import json

import dagster as dg
import pytest

from halo_assets.demo import GO, NO_GO, check_rows, exit_status, run_retrain, verdict
from tests.conftest import REAL_CUTOUTS
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
    assert exit_status(result) == GO
    # every check of the run, measured or not, reports an observed value and its limit, and means something
    rows = check_rows(evaluations)
    assert len(rows) == len(checks) and all(r["observed"] != "-" and r["limit"] != "-" and r["meaning"] for r in rows)
    page = (tmp_path / "smoke" / "evaluation_report" / "report.html").read_text()
    assert page.split("<body>", 1)[1].startswith('<div class="verdict go"><h1>GO</h1>')
    assert f"run <code>{result.run_id}</code>" in page and "profile <b>smoke</b>" in page
    # trained_model's, the config review's (config_*), injection_realism and sim_to_real_purity are WARN advisories; smoke
    # skips the shift suite, whose checks then say "not measured" (WARN)
    shift = {k: v for k, v in checks.items() if k[1].startswith("shift_") or k[1] == "independent_renderer_shift"}
    blocking = {k: v for k, v in checks.items() if k[0] != "trained_model" and not k[1].startswith("config_")
                and k[1] not in ("injection_realism", "sim_to_real_purity", "core_perturbation_offset") and k not in shift}
    assert all(blocking.values()) and len(blocking) == 21 and len(checks) == 39, [k for k, v in checks.items() if not v]
    assert len(shift) == 6 and not any(shift.values())
    # no real lenses configured: realism is unmeasured (a WARN, never a pass) and real_validation says why
    assert checks[("evaluation_report", "injection_realism")] is False
    assert checks[("real_validation", "sim_to_real_purity")] is False  # not measurable, never a pass
    real = next(m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("real_validation"))
    assert real.materialization.metadata["skipped"].value is True
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


def test_gen5_prime_ends_no_go_because_it_needs_a_control_stamp(tmp_path, instance, capfd):
    result = run_retrain("gen5_prime", GEN5_AT_SMOKE_SIZE, str(tmp_path), instance)
    go, evaluations = verdict(result)
    checks = _checks(evaluations)
    assert not go and exit_status(result) == NO_GO
    # the expected NO-GO reads as a verdict on the console: no ERROR line, no stack trace, the held-back
    # promotion said in words (Dagster's event log keeps the check failures with their errors)
    console = capfd.readouterr().err
    assert " - ERROR - " not in console and "Stack Trace" not in console, console[-3000:]
    assert "promoted_model not started: NO-GO" in console and "no step crashed" in console
    failed = {r["check"]: r for r in check_rows(evaluations) if r["result"] == "FAIL"}
    assert failed["evaluation_report.deployable_without_control"]["observed"] == "needs the control stamp"
    assert next(iter(failed)) == sorted(failed)[0]  # failures first, then warnings, then passes
    page = (tmp_path / "gen5_prime" / "evaluation_report" / "report.html").read_text()
    banner = page.split("<body>", 1)[1].split("</div>", 1)[0]
    assert banner.startswith('<div class="verdict nogo"><h1>NO-GO: not promoted')
    assert "<b>deployable_without_control</b>: needs the control stamp (expected the stamp alone)" in banner
    assert checks[("evaluation_report", "deployable_without_control")] is False
    # the plan's Q7 answered by measurement: what a real galaxy's substitute control would give
    deployable = next(e for e in evaluations if e.check_name == "deployable_without_control")
    aurocs = {k: deployable.metadata[f"test_auroc_{k}"] for k in ("true_control", "duplicated_image", "median_template")}
    assert all(a is not None for a in aurocs.values()), aurocs
    assert checks[("shortcut_gates", "shortcut_core_auc")] is False  # (stamp, ctrl) vs (ctrl, ctrl): trivial
    assert checks[("shortcut_gates", "selection_null")] is True  # paired: not informative, so it cannot block
    assert checks[("evaluation_report", "independent_renderer_shift")] is False  # it needs a control stamp
    data_checks = {k: v for k, v in checks.items()
                   if k[0] in ("paired_stamps", "filtered_dataset") and not k[1].startswith("config_")}
    assert len(data_checks) == 6 and all(data_checks.values())  # the data is fine; the model is not
    assert checks[("filtered_dataset", "config_input_deployable")] is False  # said before training, as a WARN
    assert not (tmp_path / "gen5_prime" / "promoted_model").exists()
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "evaluation_report" in materialized and "promoted_model" not in materialized


def test_real_cutouts_configured_run_the_whole_loop_on_real_inputs(tmp_path, instance):
    """Arcs injected into the six real fixtures, trained, evaluated, and validated on the same six as
    known lenses (candidates, n = 6: the mechanics of the loop, not a science result)."""
    fixtures = REAL_CUTOUTS
    overrides = [f"lrg_cutouts_path={fixtures}", "injection.injections_per_galaxy=6",
                 "injection.test_fraction=0.45", "epochs=1", "batch_size=16",
                 # three test galaxies, two train ones: too few for unpaired halves (each stamp against its own
                 # control instead) and for 5 galaxy-disjoint gate folds
                 "sample_construction=ctrl_negative", "gates.folds=2", f"real_validation.lenses_path={fixtures}"]
    # the plan's thresholds: a one-epoch model on five galaxies ends NO-GO, and real validation is evidence,
    # so it runs all the same (it does not sit behind the report's blocking checks)
    result = run_retrain("smoke", overrides, str(tmp_path), instance)
    materialized = {m.asset_key.to_user_string(): m.materialization.metadata
                    for m in result.get_asset_materialization_events()}
    assert not verdict(result)[0] and "promoted_model" not in materialized
    assert materialized["paired_stamps"]["mode"].value == "injected into real cutouts"
    real = materialized["real_validation"]
    assert real["skipped"].value is False and real["n_lenses"].value == 6 and real["n_nonlenses"].value == 24
    assert "STAND-IN" in real["nonlenses"].value
    report = json.loads((tmp_path / "smoke" / "evaluation_report" / "report.json").read_text())
    assert report["realism_probe"]["n_real"] == 6 and "not measurable" in report["realism_probe"]["status"]
    realism = next(e for e in result.get_asset_check_evaluations() if e.check_name == "injection_realism")
    assert realism.passed is False and realism.severity == dg.AssetCheckSeverity.WARN
