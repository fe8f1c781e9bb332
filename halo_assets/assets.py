"""The asset graph (docs/design.md §2 (graph)): paired_stamps -> filtered_dataset -> trained_model -> calibrated_model
-> evaluation_report -> promoted_model. Each body resolves the config, calls one halo_core function
and turns its report into metadata."""


import hashlib
import json
import os
import sys
from dataclasses import asdict

import dagster as dg

from halo_assets.metadata import (
    check_result,
    comparison_metadata,
    dataset_metadata,
    gates_metadata,
    number,
    report_metadata,
    table,
    tidy,
    training_metadata,
)
from halo_assets.resources import PROFILES, HaloSettings
from halo_core import __version__, uris
from halo_core.config import HaloConfig
from halo_core.data.filtering import build_filtered_dataset
from halo_core.data.preprocess import PreprocessSpec
from halo_core.data.reader import SPLITS, Source, split_files
from halo_core.data.shards import data_fingerprint
from halo_core.evaluation.calibration import Calibration, ValidationFit, calibrate_on_val
from halo_core.evaluation.gates import shortcut_gates as measure_shortcut_gates
from halo_core.evaluation.promotion import compare, require_go, score_test_split
from halo_core.evaluation.report import KEY_PLOTS, REPORT_HTML, REPORT_JSON, ReportContext, evaluate, thumbnail_path
from halo_core.evaluation.results import Comparison, EvaluationReport, GatesReport
from halo_core.model.checkpoint import file_sha256, load_sidecar
from halo_core.model.registry import GATES as REGISTRY_GATES
from halo_core.model.registry import REPORT as REGISTRY_REPORT
from halo_core.model.registry import add_version, find_version, production, set_production, version_model
from halo_core.outputs import DATASET, FILE, RESUMABLE, write_json
from halo_core.simulate import build_simulated_dataset
from halo_core.simulate.injection import inject_dataset as build_injected_dataset
from halo_core.training.tracking import log_model_artifact
from halo_core.training.trainer import FINAL, fit, run_key, training_result

CALIBRATION_FILE = "calibration.json"
GATES_FILE = "gates.json"
CURRENT_RUN_FILE = "current.json"  # which run folder trained_model last materialized

# The training step asks for a GPU wherever it runs: a Dagster concurrency pool (one GPU job at a
# time on a shared box) plus the pod spec the k8s executor applies (docs/design.md §2 (graph)).
GPU_POOL = "gpu"
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        # the GPU, and CPU and memory for the loader feeding it (shards are memory-mapped: page cache)
        "container_config": {"resources": {"requests": {"cpu": "8", "memory": "48Gi"},
                                           "limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
}


def content_config(asset: str, cfg: HaloConfig) -> dict:
    """The part of the config an asset's content depends on. Data: what the simulator and the filter
    read; trained_model: the weight-determining keys (HaloConfig.training_hash); the rest (gates,
    calibration, report, promotion) also follow thresholds and the calibration choice."""
    if asset == "paired_stamps":
        return {"simulation": cfg.simulation.model_dump(mode="json")}
    if asset == "filtered_dataset":
        return {**cfg.model_dump(mode="json", include={"exclude_bricks", "quality_cuts", "input_keys"}),
                "preprocess": PreprocessSpec.from_config(cfg).to_dict()}
    if asset == "trained_model":
        return {"training_hash": cfg.training_hash()}
    return {"config_hash": cfg.config_hash()}


def versioned(assets_defs: list, cfg: HaloConfig) -> list:
    """The assets with code versions from halo's release and ``cfg`` (the code location's profile; the
    git commit never enters), so the UI marks an asset unsynced after an upgrade or a change to the
    config it depends on."""
    def version(spec: dg.AssetSpec) -> dg.AssetSpec:
        config = json.dumps(content_config(spec.key.to_user_string(), cfg), sort_keys=True)
        return spec.replace_attributes(code_version=f"{__version__}-{hashlib.sha256(config.encode()).hexdigest()[:16]}")

    return [a.map_asset_specs(version) if isinstance(a, dg.AssetsDefinition) else a for a in assets_defs]


def stamps_fingerprint(source: Source) -> str:
    """The input parquet's content fingerprint (docs/design.md §9 (run keys)): file names relative to their root and bytes;
    for the plan's three split paths, the three fingerprints together."""
    def one(root: str) -> str:
        resolved = uris.current(root)  # on S3 a staged build's version folder: its name is not content
        return uris.content_fingerprint(uris.find(resolved, ".parquet"), resolved)

    if isinstance(source, str):
        return one(source)
    return hashlib.sha256(json.dumps({s: one(source[s]) for s in SPLITS}).encode()).hexdigest()[:16]


def source_uri(halo: HaloSettings) -> Source:
    """The paired dataset: the plan's three split paths, the configured train_path root, or the
    synthesized one under the root."""
    cfg = halo.config()
    return cfg.split_paths or cfg.train_path or halo.uri("paired_stamps")


# Building a dataset replaces it: one build at a time per instance (the pool's limit is the instance's
# `concurrency.pools.default_limit: 1`, deploy/dagster*.yaml), so a sensor run and a scheduled run queue
# instead of writing the same location at once; outside Dagster the local file lock does the same.
DATASET_POOL = "dataset_build"


@dg.asset(group_name="data", kinds={"parquet"}, pool=DATASET_POOL, partitions_def=PROFILES,
          deps=["real_lrg_cutouts"])  # halo_assets.real_data: the real cutouts the injected mode reads
def paired_stamps(context: dg.AssetExecutionContext, halo: HaloSettings) -> dg.MaterializeResult:
    """The raw paired dataset (stamp with injected arc + control): an external URI when `train_path`
    is set, arcs injected into the real cutouts of `lrg_cutouts_path` when that is set, else the
    embedded synthetic dataset in the same schema (docs/design.md §3 (data contract), §4 (simulator))."""
    cfg = halo.config()
    if cfg.lrg_cutouts_path:
        report = build_injected_dataset(cfg.lrg_cutouts_path, halo.uri("paired_stamps"), cfg.injection)
        fingerprint = stamps_fingerprint(halo.uri("paired_stamps"))
        return dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
            "uri": dg.MetadataValue.path(halo.uri("paired_stamps")), "mode": "injected into real cutouts",
            "data_fingerprint": fingerprint,
            "cutouts": dg.MetadataValue.path(cfg.lrg_cutouts_path),
            "rows": table([{"split": s, "galaxies": report.galaxies[s], "rows": report.rows[s],
                            "bricks": len(report.bricks[s])} for s in SPLITS]),
            "psf_source": dg.MetadataValue.json(report.psf_source),
            "arc_snr_median": report.arc_snr_median, "seconds": report.seconds,
            "refused": dg.MetadataValue.json(report.refused),  # cutouts the reading rules refused, by reason
        })
    if cfg.train_path:
        source = source_uri(halo)
        files = split_files(source)
        fingerprint = stamps_fingerprint(source)
        return dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
            "uri": dg.MetadataValue.path(cfg.train_path), "data_fingerprint": fingerprint,
            "files": table([{"split": s, "files": len(files[s]),
                             "location": source if isinstance(source, str) else source[s]} for s in SPLITS]),
        })
    report = build_simulated_dataset(halo.uri("paired_stamps"), cfg.simulation)
    context.log.info("synthesized %s rows in %.1f s", report.rows, report.seconds)
    fingerprint = stamps_fingerprint(halo.uri("paired_stamps"))
    return dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
        "uri": dg.MetadataValue.path(halo.uri("paired_stamps")), "data_fingerprint": fingerprint,
        "rows": table([{"split": s, "rows": n, "files": report.files[s]} for s, n in report.rows.items()]),
        "nan_rows": dg.MetadataValue.int(report.nan_rows),
        "masked_arc_rows": dg.MetadataValue.int(report.masked_arc_rows),
        "seconds": number(report.seconds),
    })


@dg.asset(deps=[paired_stamps], group_name="data", kinds={"numpy"}, pool=DATASET_POOL, partitions_def=PROFILES)
def filtered_dataset(halo: HaloSettings) -> dg.MaterializeResult:
    """Excluded bricks removed, quality cuts applied, corrupt/NaN rows quarantined and counted, pairs
    preprocessed once into memory-mapped float16 shards."""
    cfg = halo.config()
    report = build_filtered_dataset(cfg, source_uri(halo), halo.uri("filtered_dataset"))
    fingerprint = data_fingerprint(halo.uri("filtered_dataset"))
    return dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
        **dataset_metadata(report), "config_hash": cfg.config_hash(), "data_fingerprint": fingerprint})


@dg.asset(deps=[filtered_dataset], group_name="data", kinds={"scikitlearn"}, partitions_def=PROFILES)
def shortcut_gates(halo: HaloSettings) -> dg.MaterializeResult:
    """Cross-validated logistic-regression AUCs on the model's input (central 10x10 core, radial
    profile, metadata) as evidence, and the same probes on arc-free inputs (the selection null). Its
    checks gate promotion, not training: a shortcut-prone model is still trained and evaluated, so the
    report shows what the shortcut buys."""
    gates = measure_shortcut_gates(halo.config(), halo.uri("filtered_dataset"))
    write_json(uris.join(halo.uri("shortcut_gates"), GATES_FILE), gates.to_dict())
    return dg.MaterializeResult(metadata=gates_metadata(gates))


def registry_uri(halo: HaloSettings) -> str:
    """The profile's model versions and its `production` pointer."""
    return halo.uri("promoted_model")


def warm_start_model(halo: HaloSettings, cfg: HaloConfig) -> str | None:
    """The production model's weights when `warm_start` is on and a production model exists."""
    version = production(registry_uri(halo)) if cfg.warm_start else None
    return version_model(registry_uri(halo), version) if version else None


def training_dir(halo: HaloSettings, cfg: HaloConfig, warm: str | None) -> str:
    """The run folder of (training hash, data fingerprint[, warm start]) under `checkpoint_dir` or the
    asset's folder (docs/design.md §9 (run keys)): the same key resumes or reuses its run, new data or a new config trains anew."""
    root = cfg.checkpoint_dir or halo.uri("trained_model")
    return uris.join(root, run_key(cfg, halo.uri("filtered_dataset"), warm))


@dg.asset(deps=[filtered_dataset], group_name="model", kinds={"pytorch"}, pool=GPU_POOL, op_tags=GPU_OP_TAGS,
          partitions_def=PROFILES)
def trained_model(context: dg.AssetExecutionContext, halo: HaloSettings) -> dg.MaterializeResult:
    """ResNet18 trained by the halo_core trainer on the filtered shards, in the run folder of its
    (training hash, data fingerprint): an interrupted run resumes from last.pt, a finished one is reused."""
    cfg = halo.config()
    warm = warm_start_model(halo, cfg)  # read once: the run folder's key and the starting weights agree
    out = training_dir(halo, cfg, warm)
    if cfg.nproc_per_node > 1:
        # DDP needs one process per device: the same trainer under torchrun, same profile and overrides.
        # Through Pipes: rank 0's log lines become run events, and a cancelled run stops torchrun.
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc_per_node}",
               "-m", "halo_assets.pipes_train", *halo.config_args(), "--data", halo.uri("filtered_dataset"),
               "--out", out, *(["--warm-start-from", warm] if warm else [])]
        context.log.info("launching %s", " ".join(cmd))
        dg.PipesSubprocessClient().run(context=context, command=cmd)
        result = training_result(out)
    else:
        result = fit(cfg, halo.uri("filtered_dataset"), out, warm_start_from=warm)
    root = halo.uri("trained_model")
    # relative to the asset's folder when the run lies under it, so the folder can be moved or synced
    relative = out.removeprefix(root.rstrip("/") + "/") if out.startswith(root.rstrip("/") + "/") else out
    write_json(uris.join(root, CURRENT_RUN_FILE), {"run_dir": relative})
    sidecar = load_sidecar(result.model_path)
    return dg.MaterializeResult(data_version=dg.DataVersion(f"{sidecar['training_hash']}-{sidecar['data_fingerprint']}"), metadata={
        **training_metadata(result), "config_hash": cfg.config_hash(), "training_hash": sidecar["training_hash"],
        "data_fingerprint": sidecar["data_fingerprint"], "warm_start_from": sidecar.get("warm_start_from") or "none"})


def model_path(halo: HaloSettings) -> str:
    """model.pt of the run trained_model last materialized (downstream assets follow that asset, not a
    folder recomputed from today's config)."""
    root = halo.uri("trained_model")
    current = uris.join(root, CURRENT_RUN_FILE)
    if not uris.exists(current):
        raise dg.Failure(f"{current}: no trained model yet; materialize trained_model first")
    run_dir = uris.read_json(current)["run_dir"]
    absolute = uris.is_remote(run_dir) or os.path.isabs(run_dir)  # a run under checkpoint_dir elsewhere
    return uris.join(run_dir if absolute else uris.join(root, run_dir), FINAL)


@dg.asset(deps=[trained_model], group_name="model", kinds={"scikitlearn"}, partitions_def=PROFILES)
def calibrated_model(halo: HaloSettings) -> dg.MaterializeResult:
    """The configured scaling (and the other, for the report) fitted on the validation split, stored
    as calibration.json."""
    cfg = halo.config()
    fit = calibrate_on_val(cfg, halo.uri("filtered_dataset"), model_path(halo))
    write_json(uris.join(halo.uri("calibrated_model"), CALIBRATION_FILE),
                           {**fit.to_dict(), "model": model_path(halo)})
    return dg.MaterializeResult(metadata=tidy({
        "method": fit.chosen.method, "platt_a": fit.chosen.a, "platt_b": fit.chosen.b, "n_val": fit.chosen.n_fit,
        "val_ece_before": fit.val_ece["before"], "val_ece_after": fit.val_ece["after"],
    }))


def load_validation_fit(halo: HaloSettings) -> ValidationFit:
    return ValidationFit.from_dict(uris.read_json(uris.join(halo.uri("calibrated_model"), CALIBRATION_FILE)))


def load_calibration(halo: HaloSettings) -> Calibration:
    return load_validation_fit(halo).chosen


@dg.asset(deps=[calibrated_model], group_name="evaluation", kinds={"html"}, partitions_def=PROFILES)
def evaluation_report(context: dg.AssetExecutionContext, halo: HaloSettings) -> dg.MaterializeResult:
    """Held-out test metrics, calibration and diagnostics, as report.json + a self-contained report.html
    that opens with the GO / NO-GO verdict on them."""
    cfg = halo.config()
    out = halo.uri("evaluation_report")
    gates = uris.join(halo.uri("shortcut_gates"), GATES_FILE)  # the banner's selection null, when measured
    report = evaluate(cfg, halo.uri("filtered_dataset"), model_path(halo), load_validation_fit(halo), out,
                      ReportContext(halo.profile(), context.run.run_id,
                                    GatesReport.read(gates) if uris.exists(gates) else None))
    written = uris.current(out)
    thumbnails = {name: uris.read_bytes(uris.join(written, thumbnail_path(name))) for name in KEY_PLOTS}
    return dg.MaterializeResult(metadata=report_metadata(
        report, uris.join(written, REPORT_HTML), thumbnails, lambda relative: halo.url("evaluation_report", relative)))


CHALLENGER_CHECK = "not_worse_than_production"


@dg.asset(deps=[evaluation_report, shortcut_gates], group_name="evaluation", kinds={"pytorch"},
          partitions_def=PROFILES, check_specs=[dg.AssetCheckSpec(CHALLENGER_CHECK, asset="promoted_model", partitions_def=PROFILES, description=(
              "Not worse than production on the newest test split. On NO-GO it never runs (UI: Execution failed)."))],
          description=(
              "The deployable model: a new version + card, and the `production` pointer. Written only on GO. "
              "Not promoted: NO-GO means a blocking go/no-go check failed, so Dagster did not start this step "
              "(shown as failed or not executed, with this step's own check); the run's `halo/verdict` and "
              "`halo/failed_checks` tags and its check results name the failed criteria and their values."))
def promoted_model(context: dg.AssetExecutionContext, halo: HaloSettings) -> dg.MaterializeResult:
    """A new version of the deployable model + its card. Recomputes GO/NO-GO itself from the stored
    report and gates (a run that selects this asset alone cannot skip them), then moves `production`
    to it unless the current production model scores better on the same test split."""
    cfg = halo.config()
    registry, data, model = registry_uri(halo), halo.uri("filtered_dataset"), model_path(halo)
    sidecar = load_sidecar(model)
    identity = {"sha256": file_sha256(model), "training_hash": sidecar["training_hash"],
                "data_fingerprint": sidecar["data_fingerprint"]}
    report_path, gates_path = uris.join(halo.current("evaluation_report"), REPORT_JSON), uris.join(halo.uri("shortcut_gates"), GATES_FILE)
    # read once: the verdict is derived from exactly the bytes the version keeps as its evidence
    evidence = {REGISTRY_REPORT: uris.read_bytes(report_path) if uris.exists(report_path) else None,
                REGISTRY_GATES: uris.read_bytes(gates_path) if uris.exists(gates_path) else None}
    report = EvaluationReport.from_dict(json.loads(evidence[REGISTRY_REPORT])) if evidence[REGISTRY_REPORT] else None
    gates = GatesReport.from_dict(json.loads(evidence[REGISTRY_GATES])) if evidence[REGISTRY_GATES] else None
    verdict = require_go(cfg, report, gates, identity)

    champion = production(registry)
    champion_model = version_model(registry, champion) if champion else None
    if champion_model is None:
        comparison = Comparison(True, skipped="first promotion: no production model to compare with")
    elif file_sha256(champion_model) == identity["sha256"]:
        comparison = Comparison(True, skipped=f"this model is production already ({champion})")
    else:
        labels, challenger_logits, n_distinct = score_test_split(cfg, data, model)
        _, champion_logits, _ = score_test_split(cfg, data, champion_model)
        comparison = compare(labels, champion_logits, challenger_logits, n_distinct, cfg.challenger,
                             cfg.operating_fpr)
    comparison.production_version, comparison.test_data_fingerprint = champion, report.data_fingerprint

    version = find_version(registry, identity["sha256"]) or add_version(registry, model, {
        "calibration": load_calibration(halo).to_dict(), "test_metrics": report.metrics,
        "evaluated_on": report.data_fingerprint, "go_no_go": verdict.to_dict(), "champion_challenger": asdict(comparison),
        "dagster_run_id": context.run.run_id}, evidence=evidence)
    promoted = comparison.promote
    if promoted and champion != version:  # compare-and-swap: a promotion that ran meanwhile is not overwritten
        set_production(registry, version, reason=f"dagster run {context.run.run_id}", expected=champion)
    context.log.info("version %s %s", version, "is production" if promoted else
                     f"is not promoted: worse than production {champion} on the same test split")
    card_model = version_model(registry, version)
    metadata = {
        "version": dg.MetadataValue.text(version), "production": dg.MetadataValue.text(production(registry)),
        "promoted": dg.MetadataValue.bool(promoted), "model_path": dg.MetadataValue.path(card_model),
        "model_sha256": identity["sha256"], "training_hash": identity["training_hash"],
        "trained_on_data": identity["data_fingerprint"], "evaluated_on_data": report.data_fingerprint,
        **comparison_metadata(comparison),
        "model_card": dg.MetadataValue.md(f"```json\n{json.dumps(report.metrics, indent=1)}\n```"),
    }
    if cfg.log_to_wandb:
        metadata["wandb_run"] = dg.MetadataValue.text(log_model_artifact(
            cfg, card_model, card_model.removesuffix(".pt") + ".json", f"halo-{halo.profile()}",
            [version, *(["production"] if promoted else [])],
            {"training_hash": identity["training_hash"], "data_fingerprint": identity["data_fingerprint"],
             "test_auroc": report.metrics["auroc"]}, context.run.run_id, uris.join(registry, "wandb")))
    worst = comparison.worst
    check = check_result(
        check_name=CHALLENGER_CHECK, passed=promoted,
        observed=f"skipped: {comparison.skipped}" if worst is None else worst[1].difference,
        expected="challenger - production >= -tolerance" if worst is None
        else f"{worst[0]} difference >= -{worst[1].tolerance:.3g}",
        n=comparison.n_test, metadata=comparison_metadata(comparison))
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


# What every asset writes, by kind (halo_core.outputs); tests/test_outputs.py fails on an asset missing here.
# Each kind's writer is the halo_core function the asset calls: build_simulated_dataset / inject_dataset /
# build_filtered_dataset / evaluate / validate_real / write_report (dataset folders), fit (a resumable run
# folder), write_json / the registry (files), build_catalog with bricks (one brick partition each).
ASSET_OUTPUTS = {
    "paired_stamps": DATASET, "filtered_dataset": DATASET, "shortcut_gates": FILE, "trained_model": RESUMABLE,
    "calibrated_model": FILE, "evaluation_report": DATASET, "promoted_model": FILE, "real_validation": DATASET,
    "candidate_catalog": DATASET, "candidate_gallery": FILE, "selection_function": DATASET,
    "real_lrg_cutouts": RESUMABLE,  # fetched cutouts: one atomic item per galaxy, resumed in place
}
