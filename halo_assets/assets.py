"""The asset graph (DESIGN §2): paired_stamps -> filtered_dataset -> trained_model -> calibrated_model
-> evaluation_report -> promoted_model. Each body resolves the config, calls one halo_core function
and turns its report into metadata."""


import json
import subprocess
import sys

import dagster as dg

from halo_assets.metadata import (
    KEY_PLOTS, dataset_metadata, gates_metadata, report_metadata, table, training_metadata,
)
from halo_assets.resources import HaloSettings
from halo_core import uris
from halo_core.calibration import Calibration, calibrate_on_val
from halo_core.checkpoint import load_checkpoint, save_checkpoint
from halo_core.filtering import build_filtered_dataset
from halo_core.gates import shortcut_gates as measure_shortcut_gates
from halo_core.reader import SPLITS, split_files
from halo_core.report import REPORT_HTML, REPORT_JSON, evaluate
from halo_core.simulate import simulate_dataset
from halo_core.train import FINAL, fit, training_result

CALIBRATION_FILE = "calibration.json"
SIMULATION_FILE = "simulation.json"
GATES_FILE = "gates.json"

# The training step asks for a GPU wherever it runs: a Dagster concurrency pool (one GPU job at a
# time on a shared box) plus the pod spec the k8s executor applies (DESIGN §2).
GPU_POOL = "gpu"
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
}


def source_uri(halo: HaloSettings) -> str:
    """The paired dataset: the configured train_path, or the synthesized one under the root."""
    return halo.config().train_path or halo.uri("paired_stamps")


@dg.asset(group_name="data", kinds={"parquet"})
def paired_stamps(context: dg.AssetExecutionContext, halo: HaloSettings) -> dg.MaterializeResult:
    """The raw paired dataset (stamp with injected arc + control): an external URI when `train_path`
    is set, else the embedded synthetic dataset in the same schema (DESIGN §3, §4)."""
    cfg = halo.config()
    if cfg.train_path:
        files = split_files(cfg.train_path)
        return dg.MaterializeResult(metadata={
            "uri": dg.MetadataValue.path(cfg.train_path),
            "files": table([{"split": s, "files": len(files[s])} for s in SPLITS]),
        })
    with uris.staged_directory(halo.uri("paired_stamps"), SIMULATION_FILE) as out:
        report = simulate_dataset(out, **cfg.simulation.model_dump())
        uris.atomic_write_json(str(out / SIMULATION_FILE), report.to_dict())
    context.log.info("synthesized %s rows in %.1f s", report.rows, report.seconds)
    return dg.MaterializeResult(metadata={
        "uri": dg.MetadataValue.path(halo.uri("paired_stamps")),
        "rows": table([{"split": s, "rows": n, "files": report.files[s]} for s, n in report.rows.items()]),
        "nan_rows": dg.MetadataValue.int(report.nan_rows),
        "masked_arc_rows": dg.MetadataValue.int(report.masked_arc_rows),
        "seconds": dg.MetadataValue.float(report.seconds),
    })


@dg.asset(deps=[paired_stamps], group_name="data", kinds={"numpy"})
def filtered_dataset(halo: HaloSettings) -> dg.MaterializeResult:
    """Excluded bricks removed, quality cuts applied, corrupt/NaN rows quarantined and counted, pairs
    preprocessed once into memory-mapped float16 shards."""
    cfg = halo.config()
    report = build_filtered_dataset(cfg, source_uri(halo), halo.uri("filtered_dataset"))
    return dg.MaterializeResult(metadata={**dataset_metadata(report), "config_hash": cfg.config_hash()})


@dg.asset(deps=[filtered_dataset], group_name="data", kinds={"scikitlearn"})
def shortcut_gates(halo: HaloSettings) -> dg.MaterializeResult:
    """Cross-validated logistic-regression AUCs on the model's input (central 10x10 core, radial
    profile, metadata) as evidence, and the same probes on arc-free inputs (the selection null). Its
    checks gate promotion, not training: a shortcut-prone model is still trained and evaluated, so the
    report shows what the shortcut buys."""
    gates = measure_shortcut_gates(halo.config(), halo.uri("filtered_dataset"))
    uris.atomic_write_json(uris.join(halo.uri("shortcut_gates"), GATES_FILE), gates.to_dict())
    return dg.MaterializeResult(metadata=gates_metadata(gates))


def training_dir(halo: HaloSettings) -> str:
    """Checkpoints of one configuration: a rerun of the same config resumes from its last.pt, a
    changed config starts its own run instead of colliding with the old checkpoints."""
    cfg = halo.config()
    return cfg.checkpoint_dir or uris.join(halo.uri("trained_model"), cfg.training_hash())


@dg.asset(deps=[filtered_dataset], group_name="model", kinds={"pytorch"}, pool=GPU_POOL, op_tags=GPU_OP_TAGS)
def trained_model(context: dg.AssetExecutionContext, halo: HaloSettings) -> dg.MaterializeResult:
    """ResNet18 trained by the halo_core trainer on the filtered shards; resumes from last.pt if a
    previous attempt was interrupted."""
    cfg = halo.config()
    out = training_dir(halo)
    if cfg.nproc_per_node > 1:
        # DDP needs one process per device: run the same trainer under torchrun, same preset and overrides
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc_per_node}",
               "-m", "halo_core.train", "--preset", halo.preset, "--data", halo.uri("filtered_dataset"), "--out", out,
               *[arg for item in halo.overrides for arg in ("--set", item)]]
        context.log.info("launching %s", " ".join(cmd))
        subprocess.run(cmd, check=True)
        result = training_result(out)
    else:
        result = fit(cfg, halo.uri("filtered_dataset"), out)
    return dg.MaterializeResult(metadata={**training_metadata(result), "config_hash": cfg.config_hash()})


def model_path(halo: HaloSettings) -> str:
    return uris.join(training_dir(halo), FINAL)


@dg.asset(deps=[trained_model], group_name="model", kinds={"scikitlearn"})
def calibrated_model(halo: HaloSettings) -> dg.MaterializeResult:
    """Platt scaling fitted on the validation split, stored beside the model as calibration.json."""
    cfg = halo.config()
    calibration, ece = calibrate_on_val(cfg, halo.uri("filtered_dataset"), model_path(halo))
    uris.atomic_write_json(uris.join(halo.uri("calibrated_model"), CALIBRATION_FILE),
                           {**calibration.to_dict(), "model": model_path(halo), "val_ece": ece})
    return dg.MaterializeResult(metadata={
        "platt_a": calibration.a, "platt_b": calibration.b, "n_val": calibration.n_fit,
        "val_ece_before": ece["before"], "val_ece_after": ece["after"],
    })


def load_calibration(halo: HaloSettings) -> Calibration:
    return Calibration.from_dict(uris.read_json(uris.join(halo.uri("calibrated_model"), CALIBRATION_FILE)))


@dg.asset(deps=[calibrated_model], group_name="evaluation", kinds={"html"})
def evaluation_report(halo: HaloSettings) -> dg.MaterializeResult:
    """Held-out test metrics, calibration and diagnostics, as report.json + a self-contained report.html."""
    cfg = halo.config()
    out = halo.uri("evaluation_report")
    report = evaluate(cfg, halo.uri("filtered_dataset"), model_path(halo), load_calibration(halo), out)
    plots = {name: uris.read_bytes(uris.join(out, report["plots"][name])) for name in KEY_PLOTS}
    return dg.MaterializeResult(metadata=report_metadata(report, uris.join(out, REPORT_HTML), plots))


@dg.asset(deps=[evaluation_report, shortcut_gates], group_name="evaluation", kinds={"pytorch"})
def promoted_model(halo: HaloSettings) -> dg.MaterializeResult:
    """The deployable model: written only when every blocking check on the report and the shortcut
    gates passed."""
    out = halo.uri("promoted_model")
    state, sidecar = load_checkpoint(model_path(halo))
    report = uris.read_json(uris.join(halo.uri("evaluation_report"), REPORT_JSON))
    card = {**sidecar, "calibration": load_calibration(halo).to_dict(), "test_metrics": report["metrics"]}
    save_checkpoint(uris.join(out, FINAL), state, card)
    return dg.MaterializeResult(metadata={
        "model_path": dg.MetadataValue.path(uris.join(out, FINAL)),
        "model_card": dg.MetadataValue.md(f"```json\n{json.dumps(report['metrics'], indent=1)}\n```"),
    })
