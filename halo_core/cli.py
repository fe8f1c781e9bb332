"""`halo`: the command line of halo_core; each subcommand calls one library function.

    halo simulate --preset demo --out data/paired          synthetic paired dataset (docs/design.md §4 (simulator))
    halo filter   --preset demo --data data/paired --out data/filtered
    halo train    --preset demo --data data/filtered --out runs/demo
    halo gates    --preset demo --data data/filtered       shortcut gates on the train split
    halo evaluate --preset demo --data data/filtered --model runs/demo/model.pt --out reports/demo
    halo score    --model halo_data/recommended/promoted_model cutouts/*.npz --out scores.csv  (its production model)
    halo models list    --registry halo_data/recommended/promoted_model   versions, metrics, which is production
    halo models promote --registry halo_data/recommended/promoted_model VERSION   roll back or forward
    halo inject   --preset demo --out data/injected cutouts/          arcs injected into real cutouts
    halo validate --model promoted_model/model.pt --lenses lenses/ --nonlenses nonlenses/ --out validation/
    halo validate --real-sky --model ... --lenses lenscat_cutouts/ --set lrg_cutouts_path=lrg_cutouts/ --out v/
    halo cutouts  --catalog lrgs.parquet --out cutouts/     fetch survey cutouts (or --lenscat); resumable
    halo catalog  --model halo_data/recommended/promoted_model/model.pt --out catalog/ cutouts/ survey/*.parquet
    halo grades import grades.csv --catalog catalog/ --out grades.parquet   a gallery's grades (then graded_negatives_path)
    halo config   --preset gen5_prime                      print the resolved configuration
    halo config   --config my_plan.yaml --set epochs=5     a user's file (the plan's dict as it is) + overrides
    halo review   --preset gen5_prime [--data data/filtered]  review the configuration before training
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass

import yaml

from halo_core import uris
from halo_core.config import (
    DEFAULT_BASE_URL,
    DEFAULT_LAYER,
    DEFAULT_SIZE,
    DEFAULT_WORKERS,
    config_args,
    load_config,
    parse_overrides,
    profile_name,
)
from halo_core.data.known_lenses import DEFAULT_RADIUS_ARCSEC
from halo_core.errors import HaloError
from halo_core.outputs import DATASET, FILE, RESUMABLE, refuse_overlap
from halo_core.train import get_args_parser, train


def cmd_config(cfg, args) -> None:
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    print(f"# config_hash: {cfg.config_hash()}")


def cmd_simulate(cfg, args) -> None:
    from halo_core.simulate import build_simulated_dataset

    report = build_simulated_dataset(args.out, cfg.simulation)
    print(json.dumps(report.to_dict(), indent=1, default=str))


def cmd_filter(cfg, args) -> None:
    from halo_core.data.filtering import build_filtered_dataset

    report = build_filtered_dataset(cfg, args.data, args.out, require_disjoint=True)
    for split, r in report.splits.items():
        print(f"{split}: kept {r.rows_kept} of {r.rows_in} rows; dropped {dict(r.counts) or 'none'}")
    print(f"split integrity: {'ok' if report.integrity.ok else report.integrity.to_dict()}")


def cmd_train(cfg, args) -> None:
    result = train(cfg, args)
    print(f"model: {result.model_path}  best epoch {result.best_epoch + 1}: val_loss {result.best.val_loss:.4f} "
          f"val_auroc {result.best.val_auroc:.4f}  ({result.seconds:.0f} s)")


def cmd_gates(cfg, args) -> int:
    from halo_core.evaluation.gates import shortcut_gates

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
            print(f"          {s.stratum:<22} AUC {s.auc:.3f}  ({s.n_pos} lenses, {s.n_neg} non-lenses)",
                  file=sys.stderr)
    return 0 if gates.passed else 1


def cmd_evaluate(cfg, args) -> None:
    from halo_core.evaluation.calibration import calibrate_on_val
    from halo_core.evaluation.report import REPORT_HTML, ReportContext, evaluate

    report = evaluate(cfg, args.data, args.model, calibrate_on_val(cfg, args.data, args.model), args.out,
                      ReportContext(profile=profile_name(args.config) if args.config else args.preset))
    m = report.metrics
    print(f"test n={m['n']}: AUROC {m['auroc']:.4f}  AUPRC {m['auprc']:.4f}  "
          f"precision@0.90 (at recall 0.90) {m['precision@0.90']:.4f}")
    print(f"report: {uris.join(args.out, REPORT_HTML)}")


def cmd_review(cfg, args) -> int:
    from halo_core.data.samples import load_split_samples
    from halo_core.training.review import ERROR, measure_step_seconds, review_config

    n_train = len(load_split_samples(cfg, args.data, "train")[1]) if args.data else None
    findings = review_config(cfg, n_train, measure_step_seconds(cfg))
    print(f"configuration review of {f'file {args.config}' if args.config else f'preset {args.preset!r}'} "
          f"(config {cfg.config_hash()}):")
    for f in findings:
        print(f"  {f.severity.upper():<5} {f.rule}  [{', '.join(f.keys)}]")
        print(f"        {f.message}")
        print(f"        consequence: {f.consequence}")
        print(f"        fix: {f.fix}")
    return 1 if any(f.severity == ERROR for f in findings) else 0


SCORE_ROWS_SHOWN = 20  # `halo score` prints the best rows; the CSV holds them all


def cmd_score(args) -> int:
    from halo_core.evaluation.calibration import Calibration
    from halo_core.model.registry import resolve_model
    from halo_core.survey.scoring import EXIT_SOME_REFUSED, score_to_csv

    calibration = Calibration.from_dict(uris.read_json(args.calibration)) if args.calibration else None
    model = resolve_model(args.model)
    summary = score_to_csv(model, args.inputs, args.out, calibration=calibration, prevalence=args.prevalence,
                           known_lens_radius_arcsec=args.known_lens_radius, top_n=SCORE_ROWS_SHOWN)
    if summary.rows > SCORE_ROWS_SHOWN:
        print(f"the {SCORE_ROWS_SHOWN} highest scores of {summary.rows} (all rows in {args.out}):")
    print(summary.top.drop(columns=["source"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    refused = dict(summary.refused)
    print(f"wrote {summary.rows} rows to {args.out} (model {model}, {summary.precision}): "
          f"{summary.rows - sum(refused.values())} scored"
          + (f", {sum(refused.values())} not scored {refused}" if refused else ""))
    return EXIT_SOME_REFUSED if refused else 0


def _operating_tpr(card: dict) -> str:
    """The card's TPR at its own config's operating FPR, e.g. "0.810@0.01"."""
    fpr = card["config"]["operating_fpr"]
    point = next((p for p in card["test_metrics"]["tpr_at_fpr"] if p["fpr"] == fpr), None)
    return "n/a" if point is None or point["tpr"] is None else f"{point['tpr']:.3f}@{fpr:g}"


def cmd_models_list(args) -> int:
    from halo_core.model.registry import RegistryError, production, versions

    try:
        current, pointer_error = production(args.registry), None
    except RegistryError as err:
        current, pointer_error = None, str(err)
    cards = versions(args.registry)
    print(f"{'':2}{'version':<28} {'AUROC':>7} {'TPR@FPR':>12} {'n_test':>6}  {'go':<5} {'training':<16} "
          f"{'trained on':<16} {'evaluated on':<16}")
    bad = 0
    for c in cards:
        mark = "*" if c["version"] == current else " "
        try:
            if "bad" in c:
                raise ValueError(c["bad"])
            m = c["test_metrics"]
            print(f"{mark:2}{c['version']:<28} {m['auroc']:>7.4f} {_operating_tpr(c):>12} "
                  f"{m['n']:>6}  {'GO' if c['go_no_go']['go'] else 'NO-GO':<5} {c['training_hash']:<16} "
                  f"{c['data_fingerprint']:<16} {c['evaluated_on']:<16}")
        except (KeyError, TypeError, ValueError) as err:  # one bad card is listed as such, never hides the rest
            bad += 1
            print(f"{mark:2}{c['version']:<28} BAD card: {err if not isinstance(err, KeyError) else f'no {err}'}")
    print(f"{len(cards)} version(s); production: {current or 'none'} (*)")
    if pointer_error or bad:
        print(f"halo models list: {pointer_error or f'{bad} bad card(s)'}", file=sys.stderr)
        return 1
    return 0


def cmd_models_promote(args) -> None:
    from halo_core.evaluation.promotion import promote

    before = promote(args.registry, args.version, reason="halo models promote")
    print(f"production: {before or 'none'} -> {args.version}")


def refused_exit(command: str, refused: dict[str, int]) -> int:
    """EXIT_SOME_REFUSED with the counts by reason on stderr when a command refused some cutouts, else 0."""
    from halo_core.survey.scoring import EXIT_SOME_REFUSED

    if not refused:
        return 0
    print(f"halo {command}: {sum(refused.values())} cutout(s) refused: {refused}", file=sys.stderr)
    return EXIT_SOME_REFUSED


def cmd_inject(cfg, args) -> int:
    from halo_core.simulate.injection import inject_dataset

    report = inject_dataset(args.cutouts, args.out, cfg.injection)
    print(json.dumps(report.to_dict(), indent=1, default=str))
    return refused_exit("inject", report.refused)


def cmd_validate(cfg, args) -> int:
    from halo_core.data.preprocess import PreprocessSpec
    from halo_core.data.samples import load_split_samples
    from halo_core.evaluation.calibration import Calibration
    from halo_core.evaluation.results import EvaluationReport
    from halo_core.evaluation.validation import VALIDATION_HTML, real_lens_realism, validate_real
    from halo_core.model.checkpoint import load_model, load_sidecar, model_precision
    from halo_core.model.engine import Engine

    # the synthetic test split's operating points and the calibration: from a report, else the model card
    card = load_sidecar(args.model)
    report = EvaluationReport.read(args.report) if args.report else None
    metrics = report.metrics if report else card.get("test_metrics")
    if not metrics:
        raise HaloError(f"{args.model}: no test metrics to set thresholds from; pass --report "
                        "evaluation_report/report.json or a promoted model (its card carries them)")
    calibration = (Calibration.from_dict(uris.read_json(args.calibration)) if args.calibration
                   else Calibration.from_dict(card["calibration"]) if "calibration" in card else None)
    if calibration is None:
        raise HaloError(f"{args.model}: no calibration; pass --calibration calibrated_model/calibration.json")
    from halo_core.evaluation.real_sky import build_real_sky_set

    lenses = args.lenses or cfg.real_validation.lenses_path
    if not lenses:
        raise HaloError("no real lenses: pass --lenses (a folder of `halo cutouts --lenscat` cutouts) or set "
                        "real_validation.lenses_path")
    rv = cfg.real_validation.model_copy(update={"lenses_path": lenses})
    real_sky = build_real_sky_set(cfg, lenses) if args.real_sky else None
    realism = report.realism_probe if report else None
    if args.data:  # injected lenses of this test split against the real lenses
        model, sidecar = load_model(args.model)
        shards, samples = load_split_samples(cfg, args.data, "test")
        realism = real_lens_realism(cfg.model_copy(update={"real_validation": rv}),
                                    Engine(model, model_precision(sidecar)),
                                    PreprocessSpec.from_dict(sidecar["preprocess"]), shards, samples)
    result = validate_real(args.model, calibration, metrics["tpr_at_fpr"], lenses, args.nonlenses or "",
                           args.out, operating_fpr=cfg.operating_fpr, prevalence=cfg.deployment_prevalence,
                           radius_arcsec=rv.known_lens_radius_arcsec, purity_target=rv.purity_target, realism=realism,
                           real_sky=real_sky)
    print(f"{result.n_lenses} real lenses, {result.n_nonlenses} {result.nonlenses_label}")
    for p in result.operating_points:
        if p.recall is None:
            print(f"  FPR {p.fpr:g}: not measurable on the synthetic test split")
            continue
        r, f = p.recall, p.fpr_real
        print(f"  FPR {p.fpr:g}{' (operating)' if p.operating else ''}: threshold {p.threshold:.4f}  "
              f"recall {r.k}/{r.n} = {r.rate:.3f} [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}]  "
              f"FPR {f.k}/{f.n} = {f.rate:.3f}  purity {p.purity_at_real_fpr:.3f}")
    for grading, points in (result.recall_by_grading or {}).items():
        print(f"  {grading}: " + "  ".join(
            f"recall@FPR {p.fpr:g} " + ("not measurable" if p.recall is None else
                                       f"{p.recall.k}/{p.recall.n} [{p.recall.ci95[0]:.3f}, {p.recall.ci95[1]:.3f}]")
            for p in points))
    print(f"sim-to-real purity {rv.purity_target:g}: {result.purity_target_check.status}")
    probe = result.realism_probe
    print(f"realism probe: AUC {probe.auc} {probe.ci95}  ({probe.status})")
    print(f"report: {uris.join(args.out, VALIDATION_HTML)}")
    return refused_exit("validate", result.refused)


def cmd_cutouts(args) -> int:
    from halo_core.survey.cutouts import FETCHED, FetchPolicy, fetch_cutouts, lenscat_targets, read_catalog, targets
    from halo_core.survey.scoring import EXIT_SOME_REFUSED

    if args.lenscat:
        gradings = tuple(g.strip() for g in args.grading.split(",") if g.strip())
        objects, inputs = targets(lenscat_targets(gradings), f"lenscat ({','.join(gradings)})"), ()
    else:
        objects, inputs = targets(read_catalog(args.catalog), args.catalog), (args.catalog,)
    policy = FetchPolicy(base_url=args.base_url, layer=args.layer, size=args.size, workers=args.workers)
    report = fetch_cutouts(objects, args.out, policy, inputs=inputs)
    print(f"{report.objects} objects ({report.duplicate_rows} duplicate input rows folded in): {report.states}; "
          f"{report.skipped} skipped (done by an earlier run), {report.requests} requests, {report.retries} retries"
          f"{f'; not fetched: {report.reasons}' if report.reasons else ''} ({report.seconds:.1f} s)")
    print(f"cutouts: {args.out}  manifest: {report.manifest}")
    return 0 if report.states.get(FETCHED, 0) == report.objects else EXIT_SOME_REFUSED


def cmd_grades_import(args) -> int:
    from halo_core.survey.candidates import read_catalog
    from halo_core.survey.grades import import_grades

    result = import_grades(args.file, read_catalog(args.catalog), args.out)
    print(f"{args.file}: {result.rows_read} grade rows, {result.imported} of catalogue galaxies; {args.out} now "
          f"grades {result.galaxies} galaxies {result.by_grade}")
    for c in result.conflicts:
        print(f"  conflicting grades for {c['id']}: the latest, {c['grade']!r}, wins over {c['overridden']}")
    if result.unknown_ids:
        print(f"  {len(result.unknown_ids)} id(s) not in the catalogue {args.catalog}, not imported: "
              f"{result.unknown_ids[:20]}", file=sys.stderr)
        return EXIT_UNKNOWN_IDS
    return 0


# `halo grades import` exits with this when some ids were not in the catalogue (they are listed)
EXIT_UNKNOWN_IDS = 3


def cmd_catalog(args) -> int:
    from halo_core.evaluation.calibration import Calibration
    from halo_core.survey.candidates import GALLERY_DIR, CatalogModel, build_catalog
    from halo_core.survey.scoring import EXIT_SOME_REFUSED

    calibration = Calibration.from_dict(uris.read_json(args.calibration)) if args.calibration else None
    model = CatalogModel.from_checkpoint(args.model, calibration=calibration, prevalence=args.prevalence)
    report = build_catalog(model, args.inputs, args.out, batch_size=args.batch_size, top_n=args.top)
    print(f"{report.rows} cutouts in {len(report.bricks)} bricks: {report.scored} scored, refused "
          f"{dict(report.refused) or 'none'}; {report.above_threshold} above the operating threshold "
          f"{model.threshold if model.threshold is not None else '(not measured)'} ({report.seconds:.1f} s)")
    print(f"catalogue: {args.out}  gallery: {uris.join(args.out, GALLERY_DIR, 'index.html')}")
    return EXIT_SOME_REFUSED if report.refused else 0


@dataclass(frozen=True)
class Output:
    """What a subcommand writes: its kind (halo_core.outputs), the argument naming it, and the
    arguments naming what it reads (an output overlapping one of them is refused before any work)."""

    kind: str
    arg: str
    inputs: tuple[str, ...] = ()


# Every subcommand, by what it writes (None: nothing); tests/test_outputs.py fails on one missing here.
OUTPUTS: dict[str, Output | None] = {
    "config": None, "review": None, "gates": None, "models list": None,
    "simulate": Output(DATASET, "out"),
    "filter": Output(DATASET, "out", ("data",)),
    "train": Output(RESUMABLE, "out", ("data", "warm_start_from")),
    "evaluate": Output(DATASET, "out", ("data", "model")),
    "score": Output(FILE, "out", ("inputs", "model", "calibration")),
    "inject": Output(DATASET, "out", ("cutouts",)),
    "validate": Output(DATASET, "out", ("model", "lenses", "nonlenses", "report", "calibration", "data")),
    "catalog": Output(DATASET, "out", ("inputs", "model", "calibration")),
    # the registry's pointer lives in the registry it reads: the one documented exception to the overlap rule
    "models promote": Output(FILE, "registry"),
    "cutouts": Output(RESUMABLE, "out", ("catalog",)),
    # a grades file is merged into: it is read and rewritten whole (file kind), never the inputs
    "grades import": Output(FILE, "out", ("file", "catalog")),
}


def command_name(args: argparse.Namespace) -> str:
    action = {"models": "models_command", "grades": "grades_command"}.get(args.command)
    return f"{args.command} {getattr(args, action)}" if action else args.command


def refuse_overlapping_output(args: argparse.Namespace) -> None:
    """The output of ``args``' subcommand against every input it names (docs/design.md §11 (storage and outputs))."""
    output = OUTPUTS[command_name(args)]
    if output is None:
        return
    inputs = []
    for name in output.inputs:
        value = getattr(args, name, None)
        inputs += value if isinstance(value, list) else [value]
    refuse_overlap(getattr(args, output.arg), inputs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="halo", description="Train, evaluate and gate a strong-lens finder.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the resolved configuration of a preset")
    config_args(p)
    p.set_defaults(run=cmd_config)

    p = sub.add_parser("review", help="review the configuration: LR schedule, early stopping, metrics, "
                                      "deployability, training budget (exit 1 on an ERROR finding)")
    config_args(p)
    p.add_argument("--data", help="filtered dataset directory: count the train samples instead of estimating them")
    p.set_defaults(run=cmd_review)

    p = sub.add_parser("simulate", help="write the synthetic paired dataset in the schema of docs/design.md §3 (data contract)")
    config_args(p)
    p.add_argument("--out", required=True, help="output directory or URI")
    p.set_defaults(run=cmd_simulate)

    p = sub.add_parser("filter", help="build the filtered, preprocessed training shards")
    config_args(p)
    p.add_argument("--data", required=True, help="paired dataset root (split folders, Hive or split column)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=cmd_filter)

    p = sub.add_parser("train", parents=[get_args_parser(add_help=False)],
                       help="train on filtered shards (same trainer as the Dagster asset and torchrun)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("gates", help="shortcut gates: selection null, deployability, and core / radial / metadata probes")
    config_args(p)
    p.add_argument("--data", required=True, help="filtered dataset directory")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.set_defaults(run=cmd_gates)

    p = sub.add_parser("score", help="score real cutouts (.npz) or paired parquet with a trained 3-channel model; "
                                     "exit 0 when every row was scored, 3 when some were refused (see `status`)")
    p.add_argument("--model", required=True, help="a model registry folder (<root>/<profile>/promoted_model: its "
                                                  "production model) or a model.pt; a promoted model carries its calibration")
    p.add_argument("inputs", nargs="+", help=".npz cutouts (101x101x3 HWC) and/or paired .parquet files")
    p.add_argument("--calibration", help="calibration.json from the calibrated_model asset")
    p.add_argument("--prevalence", type=float, help="deployment lens prevalence (default: the model's config)")
    p.add_argument("--known-lens-radius", type=float, default=DEFAULT_RADIUS_ARCSEC, metavar="ARCSEC",
                   help=f"cross-match radius to the lenscat known lenses (default {DEFAULT_RADIUS_ARCSEC:g})")
    p.add_argument("--out", required=True, help="output CSV")
    p.set_defaults(run=cmd_score, needs_config=False)

    p = sub.add_parser("inject", help="inject simulated arcs into real cutouts: a paired dataset (docs/design.md §3 (data contract))")
    config_args(p)
    p.add_argument("cutouts", nargs="+", help=".npz cutouts (101x101x3 HWC), folders of them, or parquet "
                                              "with a cutout column and meta_* columns")
    p.add_argument("--out", required=True, help="output directory or URI")
    p.set_defaults(run=cmd_inject)

    p = sub.add_parser("validate", help="score real lenses and non-lenses at the synthetic operating thresholds")
    config_args(p)
    p.add_argument("--model", required=True, help="model.pt (a promoted model carries its test metrics and calibration)")
    p.add_argument("--lenses", help="real lens cutouts: folder, .npz files or parquet (default "
                                    "real_validation.lenses_path)")
    p.add_argument("--real-sky", action="store_true", help="non-lenses: the LRG cutouts of lrg_cutouts_path in "
                   "test-split bricks, away from known lenses; lenses reported per lenscat grading")
    p.add_argument("--nonlenses", help="real non-lens cutouts; without them, labelled sky stand-ins are used")
    p.add_argument("--report", help="evaluation_report/report.json: thresholds and realism probe from it")
    p.add_argument("--calibration", help="calibration.json (default: the model card's)")
    p.add_argument("--data", help="filtered dataset: run the realism probe against its test-split injections")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=cmd_validate)

    p = sub.add_parser("cutouts", help="fetch survey cutouts around catalogue positions from the Legacy Survey "
                                       "cutout service (resumable; exit 3 when some were refused or failed)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--catalog", help="CSV or parquet with ra, dec (deg, any case) and optional id, brickname")
    which.add_argument("--lenscat", action="store_true", help="the known lenses of the lenscat catalogue")
    p.add_argument("--grading", default="confident,probable", help="with --lenscat: gradings to fetch")
    p.add_argument("--out", required=True, help="cutout folder (resumed when it holds an earlier fetch)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"the cutout service (default {DEFAULT_BASE_URL})")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="cutout side in pixels")
    p.add_argument("--layer", default=DEFAULT_LAYER, help="survey layer")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="requests at once")
    p.set_defaults(run=cmd_cutouts, needs_config=False)

    p = sub.add_parser("catalog", help="score a survey's cutouts on Ray into a brick-partitioned parquet "
                                       "catalogue with a gallery of the top candidates")
    p.add_argument("--model", required=True, help="model.pt (a promoted model carries its calibration)")
    p.add_argument("inputs", nargs="+", help=".npz cutouts, paired .parquet files, or folders of them (local or s3://)")
    p.add_argument("--calibration", help="calibration.json, for a model without one in its card")
    p.add_argument("--prevalence", type=float, help="deployment lens prevalence (default: the model's config)")
    p.add_argument("--batch-size", type=int, default=256, help="cutouts per model call")
    p.add_argument("--top", type=int, default=50, help="candidates in the gallery")
    p.add_argument("--out", required=True, help="catalogue folder or s3:// URI (replaced)")
    p.set_defaults(run=cmd_catalog, needs_config=False)

    p = sub.add_parser("evaluate", help="calibrate on val, evaluate on test, write report.json/.html")
    config_args(p)
    p.add_argument("--data", required=True, help="filtered dataset directory")
    p.add_argument("--model", required=True, help="model.pt from `halo train`")
    p.add_argument("--out", required=True, help="report directory")
    p.set_defaults(run=cmd_evaluate)

    grades = sub.add_parser("grades", help="people's grades of catalogue candidates (the gallery's buttons)")
    grades_sub = grades.add_subparsers(dest="grades_command", required=True, metavar="ACTION")
    p = grades_sub.add_parser("import", help="merge a gallery's grades CSV into a grades file (the latest grade "
                                             "per galaxy wins; exit 3 when some ids are not in the catalogue)")
    p.add_argument("file", help="grades CSV downloaded from the gallery (id, ra, dec, grade, grader, time)")
    p.add_argument("--catalog", required=True, help="the candidate catalogue folder the gallery was made from")
    p.add_argument("--out", required=True, help="grades file (parquet), created or merged into; point "
                                                "graded_negatives_path at it to train on the 'not a lens' grades")
    p.set_defaults(run=cmd_grades_import, needs_config=False)

    models = sub.add_parser("models", help="model versions and the production pointer of one profile")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    for name, run, text in (("list", cmd_models_list, "versions with test metrics and data fingerprints"),
                            ("promote", cmd_models_promote, "point production at VERSION after re-deriving its GO verdict from its "
                                            "stored report and gates (refuses a NO-GO one; repairs a corrupt pointer)")):
        p = models_sub.add_parser(name, help=text)
        p.add_argument("--registry", required=True, help="<root>/<profile>/promoted_model (local folder or s3:// URI)")
        if name == "promote":
            p.add_argument("version", help="a version name from `halo models list`")
        p.set_defaults(run=run, needs_config=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        refuse_overlapping_output(args)
        if not getattr(args, "needs_config", True):
            return args.run(args) or 0
        cfg = load_config(args.preset, args.config, parse_overrides(args.set))
        return args.run(cfg, args) or 0
    except (HaloError, OSError) as err:  # OSError: a read-only folder, a full disk; its message names the path
        print(f"halo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
