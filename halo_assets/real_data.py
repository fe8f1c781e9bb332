"""Real galaxies in the graph: the `real_validation` asset and the injection-realism check (docs/design.md §8 (trust))."""

from __future__ import annotations

from dataclasses import asdict

import dagster as dg

from halo_assets.assets import calibrated_model, evaluation_report, load_calibration, model_path
from halo_assets.metadata import check_result, number, table
from halo_assets.resources import PROFILES, HaloSettings
from halo_core import uris
from halo_core.errors import ContractError
from halo_core.evaluation.real_sky import build_real_sky_set
from halo_core.evaluation.report import REPORT_JSON
from halo_core.evaluation.results import EvaluationReport, PurityTarget
from halo_core.evaluation.validation import VALIDATION_HTML, VALIDATION_JSON, test_operating_points, validate_real
from halo_core.records import from_json
from halo_core.survey.cutouts import FETCHED, FetchPolicy, fetch_cutouts, read_catalog, targets


@dg.asset(group_name="data", kinds={"numpy"}, partitions_def=PROFILES)
def real_lrg_cutouts(halo: HaloSettings) -> dg.MaterializeResult:
    """Real LRG cutouts fetched from the Legacy Survey cutout service around the positions of
    `real_sky.lrg_catalog`, into `lrg_cutouts_path` (the folder paired_stamps' injected mode reads):
    resumable, one npz per galaxy and a manifest of fetched / refused / failed. Skipped, saying why,
    when `real_sky.lrg_catalog` is not set."""
    cfg = halo.config()
    if not cfg.real_sky.lrg_catalog:
        return dg.MaterializeResult(metadata={"skipped": True, "reason": "real_sky.lrg_catalog is not set"})
    catalog = cfg.real_sky.lrg_catalog
    report = fetch_cutouts(targets(read_catalog(catalog), catalog), cfg.lrg_cutouts_path,
                           FetchPolicy.from_config(cfg.real_sky), inputs=(catalog,))
    if not report.states[FETCHED]:
        raise ContractError(f"{catalog}: no cutout fetched from {cfg.real_sky.base_url} ({report.reasons}); "
                            f"manifest {report.manifest}")
    return dg.MaterializeResult(metadata={
        "skipped": False, "uri": dg.MetadataValue.path(cfg.lrg_cutouts_path), "catalog": catalog,
        "objects": report.objects, **{k: v for k, v in report.states.items()},
        "not_fetched": dg.MetadataValue.json(report.reasons), "skipped_as_done": report.skipped,
        "requests": report.requests, "retries": report.retries, "duplicate_rows": report.duplicate_rows,
        "seconds": report.seconds, "manifest": dg.MetadataValue.path(report.manifest)})


@dg.asset(deps=[calibrated_model], group_name="evaluation", kinds={"html"}, partitions_def=PROFILES)
def real_validation(halo: HaloSettings) -> dg.MaterializeResult:
    """Real known lenses and non-lenses scored at the operating thresholds of the synthetic test split:
    recall with Wilson intervals, FPR, implied purity, score distributions, galleries, lenscat matches.
    Evidence, so it runs on a NO-GO too: it hangs off the calibrated model, not behind the evaluation
    report's blocking checks, and measures the test split's thresholds with the report's own function.
    Skipped, saying why, when `real_validation.lenses_path` is not set."""
    cfg = halo.config()
    rv = cfg.real_validation
    if not rv.lenses_path:
        return dg.MaterializeResult(metadata={
            "skipped": True, "reason": "no real lenses configured: set real_validation.lenses_path (and "
                                       "real_validation.nonlenses_path) to cutout folders or parquet files"})
    out = halo.uri("real_validation")
    calibration = load_calibration(halo)
    thresholds = test_operating_points(cfg, halo.uri("filtered_dataset"), model_path(halo), calibration)
    result = validate_real(model_path(halo), calibration, thresholds, rv.lenses_path,
                           rv.nonlenses_path, out, operating_fpr=cfg.operating_fpr, prevalence=cfg.deployment_prevalence,
                           radius_arcsec=rv.known_lens_radius_arcsec, purity_target=rv.purity_target,
                           real_sky=build_real_sky_set(cfg) if cfg.real_sky.validation else None)
    points = [{"fpr": p.fpr, "operating": p.operating, "threshold": p.threshold,
               "recall": p.recall.rate if p.recall else None, "recall_ci95": list(p.recall.ci95) if p.recall else None,
               "fpr_real": p.fpr_real.rate if p.fpr_real else None,
               "purity_at_real_fpr": p.purity_at_real_fpr} for p in result.operating_points]
    operating = result.operating
    return dg.MaterializeResult(metadata={
        "skipped": False, "report": dg.MetadataValue.path(uris.join(out, VALIDATION_HTML)),
        "n_lenses": result.n_lenses, "n_nonlenses": result.n_nonlenses,
        "nonlenses": result.nonlenses_label, "operating_fpr": cfg.operating_fpr,
        "recall_at_operating": number(operating.recall.rate if operating.recall else None),
        "fpr_real_at_operating": number(operating.fpr_real.rate if operating.fpr_real else None),
        "operating_points": table(points), "known_lens_matches": dg.MetadataValue.json(result.known_lens_matches),
        "sim_to_real_purity": result.purity_target_check.status,
        **({"recall_by_grading": dg.MetadataValue.json({g: [asdict(r) for r in rows]
                                                         for g, rows in result.recall_by_grading.items()}),
            "real_sky_set": dg.MetadataValue.json(asdict(result.real_sky_set))} if result.real_sky_set else {}),
    })


@dg.asset_check(asset=real_validation, partitions_def=PROFILES,
                description="WARN: the plan's Q3 target, sim-to-real purity >= 75 %, on real non-lenses.")
def sim_to_real_purity(halo: HaloSettings) -> dg.AssetCheckResult:
    """The plan's Q3 target, sim-to-real purity > real_validation.purity_target at the deployment prevalence:
    the FPR on real non-lenses at the operating threshold, Wilson upper bound, is at most
    pi R (1 - P) / (P (1 - pi)). WARN; 'not measurable' (with the number of real non-lenses it needs) when
    the set cannot resolve it."""
    path = uris.join(halo.current("real_validation"), VALIDATION_JSON)
    if not halo.config().real_validation.lenses_path or not uris.exists(path):
        return check_result(passed=False, observed="not measurable", expected="FPR on real non-lenses <= the required FPR",
                            severity=dg.AssetCheckSeverity.WARN, metadata={
                                "status": "not measurable: no real validation configured (real_validation.lenses_path, "
                                          "real_sky)"})
    target = from_json(PurityTarget, uris.read_json(path)["purity_target_check"])
    metadata = {"status": target.status, "purity": target.purity, "prevalence": target.prevalence,
                "recall": number(target.recall), "required_fpr": number(target.required_fpr),
                "fpr": number(target.fpr), "fpr_ci95": dg.MetadataValue.json(target.fpr_ci95),
                "n_nonlenses": target.n_nonlenses or 0, "nonlenses_needed": target.nonlenses_needed or 0}
    required = target.required_fpr
    return check_result(passed=target.passed, observed=target.fpr if target.fpr is not None else target.status,
                        expected=f"FPR <= {required:.2g} (Wilson upper bound)" if required is not None else
                        "FPR <= the required FPR", n=target.n_nonlenses or 0,
                        severity=dg.AssetCheckSeverity.WARN, metadata=metadata)


@dg.asset_check(asset=evaluation_report, partitions_def=PROFILES, description=(
    "WARN: to the model, injected lenses look like real ones (else completeness is a lower bound)."))
def injection_realism(halo: HaloSettings) -> dg.AssetCheckResult:
    """A linear probe on the model's penultimate features cannot tell injected from real lenses: its
    cross-validated AUC is at most real_validation.max_realism_auc. Above it, injection-based completeness
    is a lower bound, not an estimate."""
    probe = EvaluationReport.read(uris.join(halo.current("evaluation_report"), REPORT_JSON)).realism_probe
    metadata = {"status": probe.status, "n_injected": probe.n_injected or 0, "ci95": dg.MetadataValue.json(probe.ci95)}
    # unmeasured (no or too few real lenses) fails as WARN, as every not-measurable criterion does:
    # passing would claim a realism nobody saw
    passed = bool(probe.measurable and probe.passed)
    if probe.auc is not None and not probe.passed:
        metadata["consequence"] = ("injected lenses are separable from real ones: injection-based completeness "
                                   "is a lower bound, not an estimate")
    return check_result(passed=passed, observed=probe.auc if probe.auc is not None else "not measurable",
                        expected=f"AUC <= {halo.config().real_validation.max_realism_auc:g}", n=probe.n_real or 0,
                        severity=dg.AssetCheckSeverity.WARN, metadata=metadata)


REAL_DATA_CHECKS = [injection_realism, sim_to_real_purity]
