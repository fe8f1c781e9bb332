"""Each check called directly on a good and a bad input: every check here can fail."""

import dagster as dg
import numpy as np
import pytest

from halo_assets.checks.data import (
    arc_snr_zero_accounted,
    class_balance,
    excluded_bricks_absent,
    finite_pixels,
    schema_contract,
    split_integrity,
)
from halo_assets.checks.go_no_go import (
    arc_snr_zero_scored_as_negative,
    brick_auroc_std,
    calibration_ece,
    theta_e_completeness_non_decreasing,
)
from halo_assets.resources import HaloSettings
from halo_core import uris
from halo_core.data.filtering import build_filtered_dataset
from halo_core.evaluation.diagnostics import binned_detection, completeness_trend
from halo_core.evaluation.report import REPORT_JSON
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


@pytest.fixture
def with_report(evaluated):
    """(tmp_path, sections) -> settings whose evaluation_report is the real smoke report with ``sections``
    replaced: the go/no-go checks read nothing else."""
    def make(tmp_path, sections: dict) -> HaloSettings:
        halo = HaloSettings(preset="smoke", root_uri=str(tmp_path / "root"))
        uris.atomic_write_json(uris.join(halo.uri("evaluation_report"), REPORT_JSON),
                               {**evaluated[1].to_dict(), **sections})
        return halo

    return make


def _is_unmeasured(result) -> bool:
    return not result.passed and result.severity == dg.AssetCheckSeverity.WARN and not result.metadata["measurable"].value


def _bricks(n_bricks: int, std: float) -> dict:
    return {"per_brick": {"min_per_class": 20, "n_bricks": n_bricks, "n_bricks_total": 9, "std": std,
                          "worst": [{"brick": "1000p010", "n_pos": 20, "n_neg": 20, "auroc": 0.9}]}}


def test_brick_auroc_std_passes_below_and_fails_above_the_threshold(tmp_path, with_report):
    assert brick_auroc_std(halo=with_report(tmp_path / "a", _bricks(6, 0.02))).passed
    failed = brick_auroc_std(halo=with_report(tmp_path / "b", _bricks(6, 0.08)))
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    # observed and expected as plain values on the check's row, not inside a pop-up
    assert failed.metadata["observed"].value == 0.08 and failed.metadata["expected"].value == "< 0.05 over >= 5 bricks"
    assert failed.metadata["n"].value == 6


def test_brick_auroc_std_with_too_few_bricks_is_an_unverified_warning(tmp_path, with_report):
    result = brick_auroc_std(halo=with_report(tmp_path, _bricks(2, 0.0)))
    assert _is_unmeasured(result) and "needs 5" in result.metadata["reason"].value


def _theta_e(completeness_per_bin: list[tuple[int, int]]) -> dict:
    """(lenses found, lenses) per unit-width theta_E bin -> the report's theta_E fields."""
    values = np.concatenate([np.full(n, i + 0.5) for i, (_, n) in enumerate(completeness_per_bin)])
    found = np.concatenate([np.r_[np.ones(k), np.zeros(n - k)] for k, n in completeness_per_bin])
    bins = binned_detection(values, found, np.zeros(3), tuple(range(len(completeness_per_bin) + 1)))
    return {"theta_e_bins": bins, "theta_e_completeness_trend": completeness_trend(bins)}


def test_theta_e_completeness_check_fails_on_a_real_drop_and_passes_on_noise(tmp_path, with_report):
    drop = theta_e_completeness_non_decreasing(halo=with_report(tmp_path / "a", _theta_e([(95, 100), (50, 100)])))
    assert not drop.passed and len(drop.metadata["violations"].value) == 1
    noise = theta_e_completeness_non_decreasing(halo=with_report(tmp_path / "b", _theta_e([(9, 10), (7, 10)])))
    assert noise.passed and noise.metadata["n"].value == 20


def test_theta_e_completeness_with_one_filled_bin_is_an_unverified_warning(tmp_path, with_report):
    result = theta_e_completeness_non_decreasing(halo=with_report(tmp_path, _theta_e([(9, 10), (0, 0)])))
    assert _is_unmeasured(result)


def _masked(k: int, n: int) -> dict:
    return {"arc_snr_zero": {"n": n, "accuracy_as_lens": k / n if n else None, "ci95": [0.0, 1.0]}}


def test_masked_arcs_must_be_scored_as_negatives(tmp_path, with_report):
    assert arc_snr_zero_scored_as_negative(halo=with_report(tmp_path / "a", _masked(2, 20))).passed
    failed = arc_snr_zero_scored_as_negative(halo=with_report(tmp_path / "b", _masked(12, 20)))  # 0.60: not below
    assert not failed.passed and failed.metadata["n"].value == 20
    assert _is_unmeasured(arc_snr_zero_scored_as_negative(halo=with_report(tmp_path / "c", _masked(0, 0))))


def _calibration(ece_after: float) -> dict:
    ece = {"ece": ece_after, "n": 400, "bins": []}
    return {"calibration": {"a": 1.1, "b": 0.1, "train_prevalence": 0.5, "n_fit": 100, "method": "platt",
                            "ece_before": {**ece, "ece": 0.2}, "ece_after": ece,
                            "alternative": {"method": "temperature", "a": 0.5, "b": 0.0, "train_prevalence": 0.5,
                                            "n_fit": 100, "ece_after": ece}}}


def test_calibration_ece_check(tmp_path, with_report):
    assert calibration_ece(halo=with_report(tmp_path / "a", _calibration(0.03))).passed
    failed = calibration_ece(halo=with_report(tmp_path / "b", _calibration(0.08)))
    assert not failed.passed and failed.metadata["n"].value == 400 and failed.metadata["observed"].value == 0.08
    assert failed.metadata["other_calibration"].value == "temperature"  # shown beside the one in use


def test_config_review_checks_warn_on_gen5_prime_and_pass_once_fixed(tmp_path):
    from halo_assets.checks.training import CONFIG_REVIEW_CHECKS

    by_name = {next(iter(c.check_specs)).name: c for c in CONFIG_REVIEW_CHECKS}
    plan = HaloSettings(preset="gen5_prime", root_uri=str(tmp_path))
    fixed = HaloSettings(preset="gen5_prime", root_uri=str(tmp_path), overrides=[
        "scheduler.T_mult=1", "early_stopping.patience=11", "metrics=[auroc, precision@0.90]",
        "input_channels=3", "sample_construction=unpaired"])
    for name in ("config_lr_annealed_at_last_epoch", "config_patience_outlasts_restart_cycles",
                 "config_targets_measured_by_metrics", "config_input_deployable"):
        warned = by_name[name](halo=plan)
        assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN, name
        assert warned.metadata["fix"].value and warned.metadata["config_keys"].value, name
        assert by_name[name](halo=fixed).passed, name
    assert not next(iter(by_name["config_input_deployable"].check_specs)).blocking


def test_training_budget_check_counts_train_samples_and_warns_on_a_huge_budget(good):
    from halo_assets.checks.training import config_training_budget

    result = config_training_budget(halo=good)
    assert result.passed and result.metadata["train_samples"].value > 0
    huge = HaloSettings(preset="smoke", overrides=[*good.overrides, "epochs=100000000"], root_uri=good.root_uri)
    failed = config_training_budget(halo=huge)
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.WARN


def _focus(arc_drop: float, core_drop: float, passed: bool) -> dict:
    return {"shortcut_diagnostics": {
        "n": 40, "arc_occlusion_drop": arc_drop, "core_occlusion_drop": core_drop, "saliency_arc_fraction": 0.4,
        "saliency_core_fraction": 0.1, "arc_area_fraction": 0.2, "mean_score": 0.8, "theta_e_bins": [],
        "core_radius_px": 5.0, "arc_footprint_sigma": 1.0,
        "arc_localised_focus": {"min_arc_occlusion_drop": 0.3, "max_core_to_arc_drop": 0.5, "passed": passed}}}


def test_arc_localised_focus_blocks_a_core_reading_model(tmp_path, with_report):
    from halo_assets.checks.go_no_go import arc_localised_focus

    assert arc_localised_focus(halo=with_report(tmp_path / "a", _focus(0.4, 0.05, True))).passed
    failed = arc_localised_focus(halo=with_report(tmp_path / "b", _focus(0.05, 0.4, False)))
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["core_occlusion_drop"].value == 0.4


def test_schema_contract_fails_rather_than_crashes_on_a_truncated_file(tmp_path):
    raw = three_splits(tmp_path / "raw", n=6)
    halo = _settings(tmp_path, raw)
    path = raw / "train" / "part-00000.parquet"
    path.write_bytes(path.read_bytes()[:64])
    result = schema_contract(halo=halo)
    assert not result.passed and "train/part-00000.parquet: not a readable parquet file" in result.metadata["problems"].value


def _shift(independent_tpr: float, faint_drop: float, raw_ece: float) -> dict:
    """A shift suite as reports wrote it while the operating point was fixed at 1e-2 (``tpr_at_fpr_1e-2``):
    still read, in today's names (halo_core.metrics.current_spelling)."""
    def one(tpr, drop, ece):
        return {"n": 400, "n_lenses": 200, "n_non_lenses": 200, "auroc": 0.95, "tpr_at_fpr_1e-2": tpr,
                "threshold_at_fpr_1e-2": 0.9, "tpr_drop": drop, "auroc_drop": 0.04, "ece_raw": ece,
                "ece_calibrated": ece, "measurable": True, "reliability": []}

    sets = {"independent": one(independent_tpr, 0.95 - independent_tpr, raw_ece),
            **{name: one(0.9, 0.05, 0.02) for name in ("compact_sources", "crowded_fields", "psf_extremes")},
            "faint_arcs": one(0.95 - faint_drop, faint_drop, 0.02)}
    return {"shift_suite": {"measurable": True, "reason": "", "sets": sets,
                            "in_distribution": {"auroc": 0.99, "tpr_at_fpr_1e-2": 0.95, "ece_raw": 0.02}}}


def test_independent_renderer_shift_blocks_a_model_that_does_not_transfer(tmp_path, with_report):
    from halo_assets.checks.go_no_go import independent_renderer_shift, shift_raw_ece

    good = with_report(tmp_path / "a", _shift(0.85, 0.1, 0.03))
    passed = independent_renderer_shift(halo=good)
    assert passed.passed and shift_raw_ece(halo=good).passed
    # the old spelling reads under the one name of the operating point, with the FPR it implied
    assert passed.metadata["tpr_at_operating_fpr"].value == 0.85 and passed.metadata["operating_fpr"].value == 1e-2
    bad = with_report(tmp_path / "b", _shift(0.36, 0.1, 0.146))  # the demo model on the independent data
    failed = independent_renderer_shift(halo=bad)
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    warned = shift_raw_ece(halo=bad)
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN


def test_stress_set_drop_warns(tmp_path, with_report):
    from halo_assets.checks.go_no_go import SHIFT_CHECKS

    faint = next(c for c in SHIFT_CHECKS if c.check_specs and next(iter(c.check_specs)).name == "shift_faint_arcs_drop")
    assert faint(halo=with_report(tmp_path / "a", _shift(0.85, 0.1, 0.03))).passed
    warned = faint(halo=with_report(tmp_path / "b", _shift(0.85, 0.5, 0.03)))
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN


def _perturbation(centred: float, offset: float, n: int) -> dict:
    cls = {"n": n, "mean_abs_change": centred, "offset_mean_abs_change": offset,
           "by_variant": {"add_centred": centred, "remove_centred": centred, "add_offset": offset,
                          "remove_offset": offset}}
    return {"core_perturbation": {"per_class": {"non_lens": cls, "lens": cls}, "spread_sigma_px": [1, 2, 3],
                                  "offsets_px": [[3, 0]],
                                  "max_mean_abs_change": 0.05, "min_per_class": 500, "measurable": n >= 500,
                                  "passed": n >= 500 and centred <= 0.05, "offset_passed": n >= 500 and offset <= 0.05}}


def test_core_perturbation_check_blocks_on_the_centred_variants_and_says_when_it_cannot_measure(tmp_path, with_report):
    from halo_assets.checks.go_no_go import core_perturbation

    passed = core_perturbation(halo=with_report(tmp_path / "a", _perturbation(0.01, 0.2, 600)))
    assert passed.passed and passed.metadata["lens_mean_abs_change"].value == 0.01  # offset variants do not block
    failed = core_perturbation(halo=with_report(tmp_path / "b", _perturbation(0.2, 0.01, 600)))
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["non_lens_mean_abs_change"].value == 0.2 and failed.metadata["threshold"].value == 0.05
    unmeasured = core_perturbation(halo=with_report(tmp_path / "c", _perturbation(0.01, 0.01, 100)))
    assert not unmeasured.passed and unmeasured.severity == dg.AssetCheckSeverity.WARN


def test_core_perturbation_offset_is_a_warning(tmp_path, with_report):
    from halo_assets.checks.go_no_go import core_perturbation_offset

    assert core_perturbation_offset(halo=with_report(tmp_path / "a", _perturbation(0.2, 0.01, 600))).passed
    warned = core_perturbation_offset(halo=with_report(tmp_path / "b", _perturbation(0.01, 0.2, 600)))
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.metadata["lens_mean_abs_change"].value == 0.2


