"""Learning curve of a training recipe (default: the demo's): val and test AUROC, precision at 90 % recall
and TPR at FPR 1e-2, each with n and a 95 % stratified-bootstrap interval, against the number of distinct
training samples; then an *extrapolation* to the plan's full run. One JSON document and one PNG.

    python -m benchmarks.learning_curve --data halo_data/demo/filtered_dataset --out lc/ [--preset demo]
        [--fractions 1,0.46,0.22,0.1] [--set KEY=VALUE ...]

Every size is trained with the same recipe (config, epochs, schedule, early stopping, precision: matched
optimisation) on a nested subset of the train split's LRGs (whole LRGs, seeded), and scored on the same val
and test splits; calibration is fitted on val as in the graph. Smaller sizes therefore also take fewer
steps, as they would with the recipe. The fit is 1 - AUROC = a * N^-b over the measured sizes, repeated on
bootstrap replicates of every point for its uncertainty; nothing here is a measurement of the full run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import machine
from halo_core import uris
from halo_core.config import config_args, load_config, parse_overrides
from halo_core.data.shards import (
    MANIFEST_FILE,
    ShardWriter,
    dataset_spec,
    fingerprint_shards,
    open_split,
    read_manifest,
)
from halo_core.data.splits import lrg_ids
from halo_core.evaluation.calibration import calibrate_on_val
from halo_core.evaluation.promotion import score_test_split
from halo_core.metrics import OPERATING_TPR, auroc, precision_at_recall, tpr_at_fpr
from halo_core.training.trainer import fit

SPLITS = ("train", "val", "test")
RESAMPLES = 300
# The plan's full run (issue 27): ~6.5 M pairs x 50 epochs; the last recorded H200 trainer rate
# (benchmarks.trainer_overhead on an H200, batch 1024, bf16, channels_last: 44,305 samples/s).
PLAN_PAIRS, PLAN_EPOCHS, H200_SAMPLES_PER_S = 6_500_000, 50, 44_305


def train_subset(source: str, out: Path, fraction: float, seed: int = 0) -> Path:
    """A filtered dataset whose train split holds ``fraction`` of the source's train LRGs (whole LRGs, a
    seeded permutation, so a smaller subset lies inside a larger one); val and test are the source's."""
    out.mkdir(parents=True, exist_ok=True)
    src = Path(uris.current(source))
    for split in ("val", "test"):
        shutil.copytree(src / split, out / split, dirs_exist_ok=True)
    train = open_split(source, "train")
    ids = lrg_ids(train.meta)
    order = np.random.default_rng(seed).permutation(np.sort(ids.unique()))
    keep = set(order[:max(1, round(fraction * len(order)))])
    rows = np.flatnonzero(ids.isin(keep).to_numpy())
    writer = ShardWriter(out / "train")
    for lo in range(0, len(rows), 1024):
        chunk = rows[lo:lo + 1024]
        pairs = np.asarray(train.pairs[chunk], np.float32)
        writer.append(pairs[:, 0], pairs[:, 1], train.meta.iloc[chunk].reset_index(drop=True))
    writer.close()
    manifest = read_manifest(source)
    manifest["data_fingerprint"] = fingerprint_shards(out, SPLITS, dataset_spec(source))
    manifest["learning_curve_subset"] = {"source": str(src), "fraction": fraction, "train_rows": int(len(rows))}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    return out


def with_intervals(labels: np.ndarray, probs: np.ndarray, n_distinct: int, operating_fpr: float, seed: int = 0) -> dict:
    """AUROC, precision at 90 % recall and TPR at the operating FPR with n and 95 % class-stratified bootstrap
    intervals (TPR only where >= 1/FPR distinct negatives make it measurable); the replicates' AUROCs too."""
    metrics = {"auroc": auroc, "precision_at_recall_0_90": lambda y, s: precision_at_recall(y, s, 0.90)}
    if tpr_at_fpr(labels, probs, operating_fpr, n_distinct)["tpr"] is not None:
        metrics[OPERATING_TPR] = lambda y, s: tpr_at_fpr(y, s, operating_fpr)["tpr"]
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    reps = {name: [] for name in metrics}
    for _ in range(RESAMPLES):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for name, fn in metrics.items():
            reps[name].append(fn(labels[idx], probs[idx]))
    out = {"n": int(len(labels)), "n_positives": int(len(pos)), "n_distinct_negatives": n_distinct}
    for name, fn in metrics.items():
        out[name] = {"value": float(fn(labels, probs)), "ci95": [float(q) for q in np.quantile(reps[name], [0.025, 0.975])]}
    out["auroc_replicates"] = [float(v) for v in reps["auroc"]]
    return out


def power_law_fit(n: np.ndarray, error: np.ndarray) -> tuple[float, float]:
    """(a, b) of error = a * n^-b, least squares in log-log."""
    slope, intercept = np.polyfit(np.log(n), np.log(np.clip(error, 1e-6, None)), 1)
    return float(np.exp(intercept)), float(-slope)


def extrapolate(points: list[dict], samples_per_pair: float) -> dict:
    n = np.array([p["train_samples"] for p in points], float)
    test_error = np.array([1 - p["test"]["auroc"]["value"] for p in points])
    a, b = power_law_fit(n, test_error)
    n_full = PLAN_PAIRS * samples_per_pair
    reps = np.array([p["test"]["auroc_replicates"] for p in points])  # (sizes, resamples)
    full = [1 - min(1.0, aa * n_full ** -bb) for aa, bb in (power_law_fit(n, 1 - reps[:, r]) for r in range(reps.shape[1]))]
    iterations = n_full * PLAN_EPOCHS
    return {
        "label": "EXTRAPOLATION, not a measurement: a power law fitted to the measured sizes above",
        "form": "1 - test AUROC = a * N^-b, N = distinct training samples", "a": a, "b": b,
        "plan_pairs": PLAN_PAIRS, "samples_per_pair": samples_per_pair, "plan_train_samples": n_full,
        "test_auroc_at_plan_size": 1 - min(1.0, a * n_full ** -b),
        "test_auroc_at_plan_size_ci95_bootstrap": [float(q) for q in np.quantile(full, [0.025, 0.975])],
        "caveats": "fitted on the demo simulator's data and recipe; ignores a floor (irreducible error), "
                   "schedule changes at scale and simulator-to-real shift; the interval covers the points' "
                   "sampling error only",
        "plan_sample_iterations": iterations, "h200_samples_per_s_recorded": H200_SAMPLES_PER_S,
        "training_hours_at_recorded_h200_rate": iterations / H200_SAMPLES_PER_S / 3600,
        "time_caveat": "the rate is an old H200 measurement of halo's trainer (issue 27 measures it anew); "
                       "validation and checkpoints are not included",
    }


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("auroc", "precision_at_recall_0_90", OPERATING_TPR)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    n = [p["train_samples"] for p in points]
    for ax, name in zip(axes, names):
        for split, marker in (("val", "o"), ("test", "s")):
            rows = [(x, p[split][name]) for x, p in zip(n, points) if name in p[split]]
            if not rows:
                continue
            xs, vals = zip(*rows)
            ys = [v["value"] for v in vals]
            err = [[y - v["ci95"][0] for y, v in zip(ys, vals)], [v["ci95"][1] - y for y, v in zip(ys, vals)]]
            ax.errorbar(xs, ys, yerr=err, marker=marker, capsize=3, label=split)
        ax.set_xscale("log")
        ax.set_xlabel("distinct training samples")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config_args(p, default_preset="demo")
    p.add_argument("--data", required=True, help="the filtered dataset of the recipe's full size")
    p.add_argument("--out", required=True, help="work folder (subsets, runs) and learning_curve.json / .png")
    p.add_argument("--fractions", default="1,0.46,0.22,0.1", help="train fractions, spanning 10x down")
    p.add_argument("--full-run", help="the run folder of this recipe on --data (e.g. the demo's trained_model run), "
                                      "reused for fraction 1 instead of training it again")
    args = p.parse_args()
    cfg = load_config(args.preset, args.config, parse_overrides(args.set))
    out = Path(args.out)
    points = []
    for fraction in sorted((float(f) for f in args.fractions.split(",")), reverse=True):
        full = fraction == 1
        data = args.data if full else train_subset(args.data, out / f"data_{fraction:g}", fraction)
        t0 = time.perf_counter()
        # a finished run of the same key is reused, not retrained (fit() checks the key)
        result = fit(cfg, str(data), args.full_run if full and args.full_run else str(out / f"run_{fraction:g}"))
        fit_s = time.perf_counter() - t0
        calibration = calibrate_on_val(cfg, str(data), result.model_path).chosen
        point = {"fraction": fraction, "train_samples": sum(result.samples["train"].values()),
                 "train_distinct_lrgs": int(lrg_ids(open_split(str(data), "train").meta).nunique()),
                 "best_epoch": result.best_epoch + 1, "epochs_run": len(result.history), "fit_seconds": round(fit_s, 1)}
        for split in ("val", "test"):
            labels, logits, n_distinct = score_test_split(cfg, str(data), result.model_path, split=split)
            point[split] = with_intervals(labels, calibration.probability(logits), n_distinct, cfg.operating_fpr)
        points.append(point)
        print(json.dumps({k: v for k, v in point.items() if k not in ("val", "test")}
                         | {s: {m: point[s][m] for m in point[s] if m != "auroc_replicates"} for s in ("val", "test")}),
              flush=True)
    source_train = open_split(args.data, "train")
    samples_per_pair = points[0]["train_samples"] / len(source_train)
    result = {"benchmark": "learning_curve", "preset": args.preset, "config_hash": cfg.config_hash(),
              "precision": cfg.resolved_precision(), "points": points,
              "extrapolation": extrapolate(points, samples_per_pair), **machine()}
    for point in result["points"]:
        for split in ("val", "test"):
            point[split].pop("auroc_replicates")
    (out / "learning_curve.json").write_text(json.dumps(result, indent=1))
    plot(points, out / "learning_curve.png")
    print(json.dumps(result["extrapolation"], indent=1))
    print(pd.DataFrame([{"train_samples": q["train_samples"], "val_auroc": q["val"]["auroc"]["value"],
                         "test_auroc": q["test"]["auroc"]["value"],
                         "test_p@0.90": q["test"]["precision_at_recall_0_90"]["value"],
                         "test_tpr@op": q["test"].get(OPERATING_TPR, {}).get("value")} for q in points]))


if __name__ == "__main__":
    main()
