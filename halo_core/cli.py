"""`halo`: the command line of halo_core; each subcommand calls one library function.

    halo simulate --preset demo --out data/paired          synthetic paired dataset (DESIGN §4)
    halo filter   --preset demo --data data/paired --out data/filtered
    halo train    --preset demo --data data/filtered --out runs/demo
    halo gates    --preset demo --data data/filtered       shortcut gates on the train split
    halo evaluate --preset demo --data data/filtered --model runs/demo/model.pt --out reports/demo
    halo score    --model halo_data/recommended/promoted_model/model.pt cutouts/*.npz --out scores.csv
    halo config   --preset gen5_prime                      print the resolved configuration
    halo review   --preset gen5_prime [--data data/filtered]  review the configuration before training
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import yaml

from halo_core import uris
from halo_core.config import load_preset, parse_overrides, preset_names
from halo_core.errors import HaloError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="recommended", help=f"one of: {', '.join(preset_names())} (default recommended)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value), e.g. --set epochs=2 --set scheduler.T_0=5")


def cmd_config(cfg, args) -> None:
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    print(f"# config_hash: {cfg.config_hash()}")


def cmd_simulate(cfg, args) -> None:
    from halo_core.simulate import simulate_dataset

    report = simulate_dataset(args.out, **cfg.simulation.model_dump())
    print(json.dumps(report.to_dict(), indent=1, default=str))


def cmd_filter(cfg, args) -> None:
    from halo_core.filtering import build_filtered_dataset

    report = build_filtered_dataset(cfg, args.data, args.out)
    for split, r in report.splits.items():
        print(f"{split}: kept {r.rows_kept} of {r.rows_in} rows; dropped {dict(r.counts) or 'none'}")
    print(f"split integrity: {'ok' if report.integrity.ok else report.integrity.to_dict()}")


def cmd_train(cfg, args) -> None:
    from halo_core.train import fit

    result = fit(cfg, args.data, args.out, resume=args.resume)
    best = result.history[result.best_epoch] if result.best_epoch >= 0 else result.history[-1]
    print(f"model: {result.model_path}  best epoch {result.best_epoch + 1}: val_loss {best['val_loss']:.4f} "
          f"val_auroc {best['val_auroc']:.4f}  ({result.seconds:.0f} s)")


def cmd_gates(cfg, args) -> int:
    from halo_core.gates import shortcut_gates

    gates = shortcut_gates(cfg, args.data, args.split)
    null = gates.selection_null
    # the table as JSON on stdout (for scripts and CI), a readable summary on stderr
    print(uris.json_text({"split": args.split, "sample_construction": cfg.sample_construction,
                          "normalization": cfg.normalization, "max_auc": cfg.gates.max_auc, **gates.to_dict()}))
    print(f"shortcut gates on {args.split} ({cfg.sample_construction}, {cfg.normalization}); blocking: the "
          f"selection null (AUC <= {cfg.gates.max_null_auc}) and deployability; the probes are evidence:",
          file=sys.stderr)
    print(f"  {'pass' if gates.deployable else 'FAIL'}  deployable without a control stamp: {gates.deployable}",
          file=sys.stderr)
    if not null.informative:
        print(f"  pass  selection null: not informative ({null.reason})", file=sys.stderr)
    for g in null.probes.values():
        print(f"  {'pass' if g.passed else 'FAIL'}  null {g.gate:<9} AUC {g.auc:.3f} "
              f"[{g.ci95[0]:.3f}, {g.ci95[1]:.3f}]  n={g.n}", file=sys.stderr)
    for g in gates.probes.values():
        print(f"  {'info' if g.passed else 'WARN'}  probe {g.gate:<8} AUC {g.auc:.3f} [{g.ci95[0]:.3f}, "
              f"{g.ci95[1]:.3f}]  n={g.n}  features={g.n_features}", file=sys.stderr)
        for s in g.strata:
            print(f"          {s['stratum']:<22} AUC {s['auc']:.3f}  ({s['n_pos']} lenses, {s['n_neg']} non-lenses)",
                  file=sys.stderr)
    return 0 if gates.passed else 1


def cmd_evaluate(cfg, args) -> None:
    from halo_core.calibration import calibrate_on_val
    from halo_core.report import REPORT_HTML, evaluate

    calibration, _ = calibrate_on_val(cfg, args.data, args.model)
    report = evaluate(cfg, args.data, args.model, calibration, args.out)
    m = report["metrics"]
    print(f"test n={m['n']}: AUROC {m['auroc']:.4f}  AUPRC {m['auprc']:.4f}  "
          f"precision@recall0.90 {m['precision_at_recall_0_90']:.4f}")
    print(f"report: {uris.join(args.out, REPORT_HTML)}")


def cmd_review(cfg, args) -> int:
    from halo_core.review import ERROR, measure_step_seconds, review_config
    from halo_core.train import load_split_samples

    n_train = len(load_split_samples(cfg, args.data, "train")[1]) if args.data else None
    findings = review_config(cfg, n_train, measure_step_seconds(cfg))
    print(f"configuration review of preset {args.preset!r} (config {cfg.config_hash()}):")
    for f in findings:
        print(f"  {f.severity.upper():<5} {f.rule}  [{', '.join(f.keys)}]")
        print(f"        {f.message}")
        print(f"        consequence: {f.consequence}")
        print(f"        fix: {f.fix}")
    return 1 if any(f.severity == ERROR for f in findings) else 0


def cmd_score(args) -> None:
    from halo_core.calibration import Calibration
    from halo_core.scoring import score

    calibration = Calibration.from_dict(uris.read_json(args.calibration)) if args.calibration else None
    table = score(args.model, args.inputs, calibration=calibration, prevalence=args.prevalence)
    table.to_csv(args.out, index=False)
    print(table.drop(columns=["source"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {len(table)} rows to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="halo", description="Train, evaluate and gate a strong-lens finder.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the resolved configuration of a preset")
    _config_args(p)
    p.set_defaults(run=cmd_config)

    p = sub.add_parser("review", help="review the configuration: LR schedule, early stopping, metrics, "
                                      "deployability, training budget (exit 1 on an ERROR finding)")
    _config_args(p)
    p.add_argument("--data", help="filtered dataset directory: count the train samples instead of estimating them")
    p.set_defaults(run=cmd_review)

    p = sub.add_parser("simulate", help="write the synthetic paired dataset (DESIGN §3 schema)")
    _config_args(p)
    p.add_argument("--out", required=True, help="output directory or URI")
    p.set_defaults(run=cmd_simulate)

    p = sub.add_parser("filter", help="build the filtered, preprocessed training shards")
    _config_args(p)
    p.add_argument("--data", required=True, help="paired dataset root (split folders, Hive or split column)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=cmd_filter)

    p = sub.add_parser("train", help="train on filtered shards (same trainer as the Dagster asset)")
    _config_args(p)
    p.add_argument("--data", required=True, help="filtered dataset directory")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore an existing last.pt")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("gates", help="shortcut gates: selection null, deployability, and core / radial / metadata probes")
    _config_args(p)
    p.add_argument("--data", required=True, help="filtered dataset directory")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.set_defaults(run=cmd_gates)

    p = sub.add_parser("score", help="score real cutouts (.npz) or paired parquet with a trained 3-channel model")
    p.add_argument("--model", required=True, help="model.pt (a promoted model carries its calibration)")
    p.add_argument("inputs", nargs="+", help=".npz cutouts (101x101x3 HWC) and/or paired .parquet files")
    p.add_argument("--calibration", help="calibration.json from the calibrated_model asset")
    p.add_argument("--prevalence", type=float, help="deployment lens prevalence (default: the model's config)")
    p.add_argument("--out", required=True, help="output CSV")
    p.set_defaults(run=cmd_score, needs_config=False)

    p = sub.add_parser("evaluate", help="calibrate on val, evaluate on test, write report.json/.html")
    _config_args(p)
    p.add_argument("--data", required=True, help="filtered dataset directory")
    p.add_argument("--model", required=True, help="model.pt from `halo train`")
    p.add_argument("--out", required=True, help="report directory")
    p.set_defaults(run=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if not getattr(args, "needs_config", True):
            return args.run(args) or 0
        cfg = load_preset(args.preset, parse_overrides(args.set))
        return args.run(cfg, args) or 0
    except HaloError as err:
        print(f"halo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
