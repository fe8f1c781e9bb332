"""The survey side of the graph (docs/design.md §13 (survey path)), downstream of the production model, on Ray:
`candidate_catalog` (partitioned by brick, registered by `new_cutouts_sensor` as input files appear),
`candidate_gallery` (the survey-wide top candidates across its bricks) and `selection_function`
(injection-recovery grid)."""

import hashlib
import json
from dataclasses import asdict

import dagster as dg

from halo_assets.assets import promoted_model, registry_uri
from halo_assets.metadata import check_result, image, number, table
from halo_assets.resources import DEPLOYMENT, PROFILES, HaloSettings
from halo_core import uris
from halo_core.model.registry import production, version_model
from halo_core.survey.candidates import (
    CatalogModel,
    CatalogReport,
    brick_index,
    brick_versions,
    build_catalog,
    publish,
    summarize,
)
from halo_core.survey.selection import RealHosts, write_report
from halo_core.survey.selection import selection_function as measure_selection_function

BRICKS = dg.DynamicPartitionsDefinition(name="catalog_bricks")
CATALOG_CHECKS = {
    "share_above_threshold": "WARN: the share above the operating threshold is near what the prevalence predicts.",
    "binary_score_frac": "Few scores are exactly 0 or 1: the model is not saturated on survey data.",
    "refused_share": "Few cutouts were refused (non-finite pixels, corrupt or missing bands).",
}


def production_model(halo: HaloSettings) -> CatalogModel:
    """The profile's production model (its registry's `production` pointer), whose card carries its
    calibration and test operating points."""
    registry = registry_uri(halo)
    version = production(registry)  # read once: the rows' model_version names the weights that scored them
    if version is None:
        raise dg.Failure(f"no production model for profile {halo.profile()!r}: {registry}: no production model yet "
                         "(nothing was promoted). Materialize promoted_model first (it promotes only on a GO verdict).")
    return CatalogModel.from_checkpoint(version_model(registry, version), version=version,
                                        operating_fpr=halo.config().operating_fpr)


def catalog_checks(report: CatalogReport, cfg) -> list[dg.AssetCheckResult]:
    """Observed next to expected: the share above the operating threshold against what the deployment
    prevalence predicts (WARN), saturated scores and refused cutouts (ERROR)."""
    limits = cfg.catalog
    expected = report.expected_share_above
    ratio = report.share_above / expected if expected else None
    off = ratio is not None and (ratio > limits.max_share_above_ratio or ratio < 1 / limits.max_share_above_ratio)
    within = f"{limits.max_share_above_ratio:g}x"
    return [
        check_result(
            check_name="share_above_threshold", passed=not off, severity=dg.AssetCheckSeverity.WARN,
            observed=report.share_above, n=report.scored,
            expected=f"within {within} of {expected:.3g} (prevalence x TPR + (1 - prevalence) x FPR)"
            if expected else "not predicted", metadata={
                "ratio": number(ratio), "threshold": number(report.threshold), "operating_fpr": report.operating_fpr}),
        check_result(
            check_name="binary_score_frac", passed=report.binary_score_frac <= limits.max_binary_score_frac,
            observed=report.binary_score_frac, expected=f"<= {limits.max_binary_score_frac:g}", n=report.scored),
        check_result(
            check_name="refused_share", passed=report.refused_frac <= limits.max_refused_frac,
            observed=report.refused_frac, expected=f"<= {limits.max_refused_frac:g}", n=report.rows,
            metadata={"reasons": dg.MetadataValue.json(dict(report.refused))}),
    ]


# Every brick is scored by the code location's own profile's production model: each depends on that
# profile's promoted_model partition, so a new production model there marks every brick stale.
@dg.asset(deps=[dg.AssetDep(promoted_model, partition_mapping=dg.SpecificPartitionsPartitionMapping(
              [DEPLOYMENT.own_profile()]))], partitions_def=BRICKS, group_name="catalog", kinds={"ray", "parquet"},
          check_specs=[dg.AssetCheckSpec(name, asset="candidate_catalog", description=description)
                       for name, description in CATALOG_CHECKS.items()])
def candidate_catalog(context: dg.AssetExecutionContext, halo: HaloSettings) -> dg.MaterializeResult:
    """One brick of the candidate catalogue: every cutout under `score_path` in that brick scored by
    the production model on Ray Data, with its gallery of the top candidates. A new production model
    makes every brick stale (its upstream changed)."""
    cfg = halo.config()
    if not cfg.score_path:
        raise dg.Failure("score_path is empty: set it to the real cutouts to score (parquet or npz, local or s3://)")
    model = production_model(halo)
    brick = context.partition_key
    files = brick_index([cfg.score_path]).get(brick)
    if not files:
        raise dg.Failure(f"brick {brick}: no cutouts under {cfg.score_path}")
    report = build_catalog(model, files, halo.uri("candidate_catalog"), bricks=[brick],
                           batch_size=cfg.catalog.batch_size, top_n=cfg.catalog.gallery_top_n)
    _, gallery = publish(report, model, brick)
    return dg.MaterializeResult(
        metadata={
            "uri": dg.MetadataValue.path(uris.join(halo.uri("candidate_catalog"), f"brick={brick}")),
            "gallery": dg.MetadataValue.path(gallery), "model_version": model.version,
            "rows": report.rows, "scored": report.scored, "above_threshold": report.above_threshold,
            "threshold": number(model.threshold), "input_files": len(files), "seconds": report.seconds,
            "top": table([{k: c[k] for k in ("galaxy_id", "ra", "dec", "score", "probability")} for c in report.top[:10]]),
        },
        check_results=catalog_checks(report, cfg),
        # what the partition was scored from: the model's version and its input files' states
        data_version=dg.DataVersion(_fingerprint([model.version, *[uris.file_state(f) for f in files]])),
    )


# Unpartitioned downstream of the brick partitions: it depends on all of them, so any newly scored
# brick marks it stale, and it waits until no registered brick is missing before it runs by itself.
@dg.asset(deps=[candidate_catalog], group_name="catalog", kinds={"html"},
          automation_condition=dg.AutomationCondition.eager())
def candidate_gallery(halo: HaloSettings) -> dg.MaterializeResult:
    """The survey-wide gallery and summary: the top `catalog.gallery_top_n` candidates across every
    materialized brick of `candidate_catalog` scored by the production model. Bricks scored by
    another model version are not comparable: left out and listed, to be re-materialized."""
    cfg = halo.config()
    model = production_model(halo)
    out = halo.uri("candidate_catalog")
    versions = brick_versions(out)
    current = [b for b, v in versions.items() if model.version in v]
    if not current:
        raise dg.Failure(f"no brick under {out} was scored by the production model {model.version} (bricks: "
                         f"{versions or 'none'}): materialize candidate_catalog's partitions first")
    report = summarize(out, model, None, cfg.catalog.gallery_top_n)
    summary, gallery = publish(report, model)
    return dg.MaterializeResult(metadata={
        "gallery": dg.MetadataValue.path(gallery), "summary": dg.MetadataValue.path(summary),
        "model_version": model.version, "bricks": len(current), "rows": report.rows, "scored": report.scored,
        "above_threshold": report.above_threshold, "share_above_threshold": number(report.share_above),
        "threshold": number(model.threshold),
        "bricks_other_model": dg.MetadataValue.json({b: v for b, v in versions.items() if v != [model.version]}),
        "top": table([{k: c[k] for k in ("galaxy_id", "brick", "ra", "dec", "score", "probability")}
                      for c in report.top[:10]]),
    })


def _fingerprint(items: list) -> str:
    return hashlib.sha256(json.dumps(items, default=str).encode()).hexdigest()[:16]


catalog_job = dg.define_asset_job("catalog_job", selection=[candidate_catalog])


@dg.sensor(job=catalog_job, minimum_interval_seconds=300)
def new_cutouts_sensor(context: dg.SensorEvaluationContext, halo: HaloSettings):
    """Registers the bricks of new or changed cutout files under `score_path` as partitions and
    requests their scoring: a new data release scores only its own bricks. The cursor holds
    (size, mtime) per file; a run key per (brick, its changed files) never scores the same twice."""
    cfg = halo.config()
    if not cfg.score_path:
        return dg.SkipReason("score_path is empty: nothing to catalogue")
    files = sorted(uris.find(cfg.score_path, ".parquet") + uris.find(cfg.score_path, ".npz"))
    states = {f: list(uris.file_state(f)[1:]) for f in files}
    known = json.loads(context.cursor) if context.cursor else {}
    changed = [f for f in files if known.get(f) != states[f]]
    if not changed:
        return dg.SkipReason(f"no new or changed files among {len(files)}")
    index = brick_index(changed)
    new = [b for b in index if not context.instance.has_dynamic_partition(BRICKS.name, b)]
    context.update_cursor(json.dumps(states))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=b, run_key=f"{b}-{_fingerprint([states[f] for f in index[b]])}",
                                    tags={"halo/trigger": "new_cutouts"}) for b in index],
        dynamic_partitions_requests=[BRICKS.build_add_request(new)] if new else [],
    )


@dg.asset(deps=[promoted_model], group_name="survey", kinds={"ray", "html"}, partitions_def=PROFILES)
def selection_function(halo: HaloSettings) -> dg.MaterializeResult:
    """Completeness of the production model at its operating threshold over the (theta_E, PSF, depth,
    source magnitude) grid of `selection_function` in the config, by injection-recovery on Ray: into
    the test split's real cutouts of `lrg_cutouts_path` when set (PSF and depth binned from the hosts'
    measured values), else into simulated hosts."""
    cfg = halo.config()
    model = production_model(halo)
    if model.threshold is None:
        # a small test split has too few distinct negatives for the operating FPR: no threshold, no completeness
        # (never a made-up 0.5); the report says the same of TPR at that FPR
        return dg.MaterializeResult(metadata={
            "completeness": dg.MetadataValue.text(
                f"not measurable: the production model has no threshold at FPR {model.operating_fpr:g} "
                "(too few distinct negatives in its test split)"),
            "model_version": model.version})
    result = measure_selection_function(cfg, model)
    html, plots = write_report(result, halo.uri("selection_function"))
    hosts = result.hosts
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.path(html), "model_version": result.model_version,
        "threshold": number(result.threshold), "operating_fpr": result.operating_fpr,
        "hosts": hosts.source, "injections": result.n, "cells": len(result.cells),
        "cells_measurable": result.cells_measurable, "seconds": result.seconds,
        **({"n_hosts": hosts.n_hosts, "hosts_selected": hosts.selected,
            "measured_bins": dg.MetadataValue.json({a: [asdict(b) for b in bins] for a, bins in hosts.bins.items()}),
            "hosts_without_arc_above_threshold": number(result.controls_above_threshold.rate)}
           if isinstance(hosts, RealHosts) else {}),
        "completeness_by_theta_e": table(result.marginals["theta_e_arcsec"]),
        "heatmap": image(plots["heatmap"], "completeness, theta_E x source magnitude", None, None),
    })
