"""Is bf16 "not worse"? Three paired comparisons on one test split (issue 22), one JSON document:

1. a bf16-trained model against an fp32-trained one (same recipe, data and seed; only `precision` differs);
2. the fp32-trained model scored in bf16 against the same model scored in fp32;
3. the floor of 1: a bf16 model trained with the next seed against the bf16 model (only `seed` differs),
   what two trainings differ by whatever their precision.

"Not worse" = the paired, class-stratified bootstrap upper bound (95 %) of the drop in AUROC and in TPR at
FPR 1e-2 is at most 0.01. Trains the missing models in --out (fp32/, bf16/, bf16_seed<N+1>/; a finished run
folder of the same key is reused).

    python -m benchmarks.precision --data halo_data/demo/filtered_dataset --out precision/ [--preset demo]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine
from halo_core.config import ChallengerConfig, config_args, load_config, parse_overrides
from halo_core.evaluation.promotion import compare, score_test_split
from halo_core.training.trainer import fit

MAX_DROP = 0.01


def drop_bound(labels: np.ndarray, reference: np.ndarray, candidate: np.ndarray, n_distinct: int,
               operating_fpr: float) -> dict:
    """Per metric (AUROC, TPR at the operating FPR): both values and the 95 % upper bound of
    (reference - candidate), paired bootstrap."""
    c = compare(labels, reference, candidate, n_distinct, ChallengerConfig(min_tolerance=0, ci=0.90,
                                                                           bootstrap_resamples=1000), operating_fpr)
    # a two-sided 90 % interval's upper end is the one-sided 95 % bound
    rows = {name: {"reference": r.production, "candidate": r.challenger, "drop": -r.difference,
                   "drop_upper_95": -r.difference + r.ci_half_width,
                   "not_worse": -r.difference + r.ci_half_width <= MAX_DROP} for name, r in c.metrics.items()}
    return {"n_test": c.n_test, "n_distinct_negatives": n_distinct, "metrics": rows,
            "not_compared": c.not_compared, "not_worse": all(r["not_worse"] for r in rows.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config_args(p, default_preset="demo")
    p.add_argument("--data", required=True, help="a filtered dataset (the demo's: halo_data/demo/filtered_dataset)")
    p.add_argument("--out", required=True, help="folder for the training runs and precision.json")
    p.add_argument("--bf16-model", help="a model.pt trained in bf16 on --data with this recipe (e.g. the demo's "
                                        "trained_model), instead of training it again")
    args = p.parse_args()
    out = Path(args.out)
    overrides = parse_overrides(args.set)
    cfg = load_config(args.preset, args.config, overrides)  # its seed builds the test split every model is scored on
    seeded = f"bf16_seed{cfg.seed + 1}"
    runs = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
            seeded: {"precision": "bf16", "seed": cfg.seed + 1}}
    models, seconds = {"bf16": args.bf16_model} if args.bf16_model else {}, {}
    for name, run in runs.items():
        if name in models:
            continue
        t0 = time.perf_counter()
        result = fit(load_config(args.preset, args.config, {**overrides, **run}), args.data, str(out / name))
        models[name], seconds[name] = result.model_path, time.perf_counter() - t0
    scored = {}
    for trained, scored_in in (("fp32", "fp32"), ("fp32", "bf16"), ("bf16", "bf16"), (seeded, "bf16")):
        labels, logits, n_distinct = score_test_split(cfg, args.data, models[trained], precision=scored_in)
        scored[(trained, scored_in)] = logits
    report = {
        "benchmark": "precision", "data": args.data, "max_drop": MAX_DROP, "fit_seconds": seconds,
        "bf16_trained_vs_fp32_trained": drop_bound(labels, scored[("fp32", "fp32")], scored[("bf16", "bf16")],
                                                   n_distinct, cfg.operating_fpr),
        "fp32_model_scored_bf16_vs_fp32": drop_bound(labels, scored[("fp32", "fp32")], scored[("fp32", "bf16")],
                                                     n_distinct, cfg.operating_fpr),
        "bf16_seed_vs_bf16_floor": drop_bound(labels, scored[("bf16", "bf16")], scored[(seeded, "bf16")], n_distinct,
                                              cfg.operating_fpr),
        "max_abs_logit_difference_fp32_model_bf16_vs_fp32": float(np.abs(scored[("fp32", "bf16")]
                                                                         - scored[("fp32", "fp32")]).max()),
        **machine(),
    }
    (out / "precision.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
