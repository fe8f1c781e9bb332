"""Real galaxies in the loop: validation on real lenses and non-lenses, and the realism gate (docs/design.md §8 (trust)).

- Operating thresholds come from the synthetic test split (the evaluation report's TPR-at-FPR rows,
  calibrated probabilities): FPR 1e-2 by default (``operating_fpr``), the others
  reported where the test split can measure them. Each result says which threshold it used.
- Recall on the real lenses with Wilson 95 % intervals; FPR on the real non-lenses; the purity
  those imply at the deployment prevalence; both score distributions; galleries of the missed lenses
  and of the highest-scored non-lenses. Every galaxy is cross-matched to lenscat.
- Realism gate: a cross-validated linear probe on the model's penultimate-layer features, injected
  lenses (the test split's) against real lenses. An AUC near 0.5 says the injections look real to the
  model; near 1, injection-based completeness is a lower bound, not an estimate. Below
  ``min_real_lenses`` the AUC is reported as indicative only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from halo_core import uris
from halo_core.data.known_lenses import crossmatch
from halo_core.data.preprocess import preprocess
from halo_core.data.samples import STAMP, SampleSet
from halo_core.data.shards import SplitShards
from halo_core.data.splits import lrg_ids
from halo_core.data.stamps import STAMP_SIZE
from halo_core.errors import ContractError
from halo_core.evaluation import real_sky as sky
from halo_core.evaluation.calibration import Calibration
from halo_core.evaluation.real_sky import RealSkySet
from halo_core.evaluation.results import GalaxyScore, OperatingPoint, Rate, RealismProbe, ValidationReport
from halo_core.metrics import auroc, precision_at_prevalence
from halo_core.model.checkpoint import load_model, model_precision, model_spec
from halo_core.model.engine import Engine
from halo_core.outputs import write_dataset
from halo_core.simulate.injection import RealCutout, Refusal, read_cutouts, refusal_counts

log = logging.getLogger(__name__)

VALIDATION_JSON, VALIDATION_HTML = "validation.json", "validation.html"
GALLERY_SIZE = 8
MAX_INJECTED = 1000  # injected lenses in the probe: enough for the AUC's injected side, seconds of CPU
BOOTSTRAP = 1000
STANDIN_LABEL = "STAND-IN non-lenses (outer sky of the lens cutouts), not real non-lens galaxies"
REAL_SKY_LABEL = "real LRGs of the test-split bricks, away from every known lens"


def logits_and_features(engine: Engine, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits and penultimate-layer features (the input of the final linear layer) of model inputs ``x``."""
    fc = engine.model.fc
    captured = []
    handle = fc.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].float().cpu()))
    try:
        logits = engine.logits(x)
    finally:
        handle.remove()
    if not captured:
        return np.zeros(0), np.zeros((0, fc.in_features))
    return logits.astype(np.float64), torch.cat(captured).double().numpy()


def sky_standins(cutouts: list[RealCutout]) -> list[RealCutout]:
    """Labelled stand-ins for the non-lens path when no real non-lenses exist: per cutout, 64x64
    mosaics of its four 32x32 corner blocks (sky and neighbours at >= 7" from the LRG, no central
    galaxy), in four arrangements. They exercise the mechanics; an FPR measured on them is not the FPR
    on real galaxies, and every report that uses them says so."""
    half = STAMP_SIZE // 2
    out = []
    for c in cutouts:
        h, w = c.cutout.shape[:2]
        corners = [c.cutout[top:top + half, left:left + half]
                   for top, left in ((0, 0), (0, w - half), (h - half, w - half), (h - half, 0))]
        for k in range(4):
            a, b, d, e = corners[k:] + corners[:k]
            mosaic = np.concatenate([np.concatenate([a, b], axis=1), np.concatenate([e, d], axis=1)], axis=0)
            out.append(RealCutout(f"{c.galaxy_id}_sky{k}", c.cutout, mosaic.transpose(2, 0, 1).astype(np.float32),
                                  # a mosaic of four sky patches has no one position: it matches no catalogue
                                  {**c.meta, "ra": math.nan, "dec": math.nan, "standin": True},
                                  f"{c.source} [corner mosaic {k}]"))
    return out


def _operating_thresholds(tpr_at_fpr: list[dict], operating_fpr: float) -> list[OperatingPoint]:
    """The synthetic test split's thresholds at FPR 1e-2, 1e-3, 1e-4, the configured one marked."""
    return [OperatingPoint(p["fpr"], p["threshold"], p["measurable"], p["tpr"], p["n_distinct_negatives"],
                           math.isclose(p["fpr"], operating_fpr)) for p in tpr_at_fpr]


def _rate(hits: np.ndarray) -> Rate:
    return Rate.of(int(hits.sum()), len(hits))


def _table(cutouts: list[RealCutout], probs: np.ndarray, radius: float) -> pd.DataFrame:
    table = pd.DataFrame({"galaxy_id": [c.galaxy_id for c in cutouts], "source": [c.source for c in cutouts],
                          "ra": [float(c.meta["ra"]) for c in cutouts], "dec": [float(c.meta["dec"]) for c in cutouts],
                          "probability": probs})
    return pd.concat([table, crossmatch(table["ra"], table["dec"], radius)], axis=1)


def realism_probe(injected: np.ndarray, injected_groups: np.ndarray, real: np.ndarray, real_groups: np.ndarray, *,
                  folds: int, min_real: int, max_auc: float, seed: int = 0) -> RealismProbe:
    """Cross-validated logistic regression on penultimate features, injected (0) vs real (1) lenses,
    folds disjoint by galaxy; AUC with a bootstrap 95 % interval over the out-of-fold scores."""
    n_real, n_inj = len(real), len(injected)
    probe = RealismProbe(True, "", n_injected=n_inj, n_real=n_real, min_real_lenses=min_real, max_auc=max_auc,
                         folds=folds, measurable=n_real >= min_real)
    # every fold needs both classes in training: no more folds than galaxies of either class
    k = min(folds, len(set(map(str, injected_groups))), len(set(map(str, real_groups))))
    if k < 2:
        probe.status = (f"not computed: {n_real} real and {n_inj} injected lenses "
                        f"({k} galaxy-disjoint fold(s) possible, 2 needed)")
        return probe
    x = np.concatenate([injected, real])
    y = np.concatenate([np.zeros(n_inj, int), np.ones(n_real, int)])
    groups = np.concatenate([np.asarray(injected_groups, str), np.char.add("real:", np.asarray(real_groups, str))])
    scores = np.empty(len(y))
    for train, test in StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, groups):
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        scores[test] = pipeline.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    probe.auc = auroc(y, scores)
    lo, hi = _bootstrap_auc_interval(scores[y == 1], scores[y == 0], seed)
    probe.ci95, probe.folds, probe.passed = [float(lo), float(hi)], k, bool(probe.auc <= max_auc)
    probe.status = ("measured" if probe.measurable else
                    f"not measurable: {n_real} real lenses < {min_real}; the AUC is indicative only")
    return probe


def _bootstrap_auc_interval(pos: np.ndarray, neg: np.ndarray, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the AUC over BOOTSTRAP class-stratified resamples, all at once:
    AUC = (rank sum of the positives - n_pos (n_pos + 1) / 2) / (n_pos n_neg), ties averaged."""
    rng = np.random.default_rng(seed)
    resampled = np.concatenate([rng.choice(pos, (BOOTSTRAP, len(pos))), rng.choice(neg, (BOOTSTRAP, len(neg)))], axis=1)
    ranks = rankdata(resampled, axis=1)[:, :len(pos)].sum(axis=1)
    aucs = (ranks - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def injected_lens_features(engine: Engine, shards: SplitShards, samples: SampleSet, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features of (up to MAX_INJECTED) injected lenses of a split, and their LRG ids."""
    pos = np.flatnonzero((samples.labels == 1) & (samples.slots == STAMP))
    if len(pos) > MAX_INJECTED:
        pos = np.sort(np.random.default_rng(seed).choice(pos, MAX_INJECTED, replace=False))
    rows = samples.rows[pos]
    _, features = logits_and_features(engine, np.asarray(shards.pairs[rows, STAMP], np.float32))
    return features, lrg_ids(shards.meta.iloc[rows]).to_numpy()


def _controls(cutouts: list[RealCutout]) -> np.ndarray:
    """(N, 3, 64, 64) central stamps; the few non-finite pixels a usable cutout may have (outside its
    core) set to 0, the sky level, as `halo score` does."""
    return np.nan_to_num(np.stack([c.control for c in cutouts]), nan=0.0, posinf=0.0, neginf=0.0)


def real_lens_realism(cfg, engine: Engine, spec, shards: SplitShards, samples: SampleSet) -> RealismProbe:
    """The realism probe of the evaluation report: test-split injected lenses vs the configured real
    lenses; ``configured`` False when there are none."""
    rv = cfg.real_validation
    if not rv.lenses_path:
        return RealismProbe(False, "skipped: real_validation.lenses_path is not set")
    if samples.with_control:
        return RealismProbe(True, "skipped: a 6-channel model cannot read a real galaxy (no control)")
    lenses = read_cutouts(rv.lenses_path, refused=[], max_nonfinite_frac=cfg.max_nonfinite_pixel_frac)
    _, real = logits_and_features(engine, preprocess(_controls(lenses), spec))
    injected, groups = injected_lens_features(engine, shards, samples, cfg.seed)
    probe = realism_probe(injected, groups, real, [c.galaxy_id for c in lenses], folds=rv.realism_folds,
                          min_real=rv.min_real_lenses, max_auc=rv.max_realism_auc, seed=cfg.seed)
    probe.lenses_path = rv.lenses_path
    return probe


def test_operating_points(cfg, dataset_dir: str, model_path: str, calibration: Calibration) -> list[dict]:
    """The synthetic test split's TPR-at-FPR rows (calibrated thresholds, distinct negatives), computed as
    the evaluation report computes them, in the model's own precision: real validation needs no report."""
    from halo_core.evaluation.promotion import score_test_split
    from halo_core.metrics import classification_metrics

    labels, logits, n_distinct = score_test_split(cfg, dataset_dir, model_path)
    return classification_metrics(labels, calibration.probability(logits), prevalence=cfg.deployment_prevalence,
                                  n_distinct_negatives=n_distinct, names=cfg.metrics)["tpr_at_fpr"]


def validate_real(model_path: str, calibration: Calibration, tpr_at_fpr: list[dict], lenses_path: str,
                  nonlenses_path: str, out_dir: str, *, operating_fpr: float, prevalence: float,
                  radius_arcsec: float, purity_target: float, realism: RealismProbe | None = None,
                  real_sky: RealSkySet | None = None) -> ValidationReport:
    """Score real lenses and non-lenses at the synthetic operating thresholds; write validation.json,
    validation.html, the per-galaxy scores (scores.csv) and plots/ under ``out_dir``. With ``real_sky``
    its lenses (reported per lenscat grading) and test-brick LRGs are scored instead of the paths', and
    the plan's purity target is tested against the FPR on those real LRGs."""
    from halo_core.reports.validation import validation_html, validation_plots  # matplotlib: only here

    model, sidecar = load_model(model_path)
    if sidecar["needs_control"]:
        raise ContractError(f"{model_path}: a 6-channel model needs a control stamp; real galaxies have none")
    engine = Engine(model, model_precision(sidecar))  # the thresholds' own numerics
    spec = model_spec(sidecar)
    points = _operating_thresholds(tpr_at_fpr, operating_fpr)
    # the rules every reader of real cutouts applies (data.stamps.refusal); a refused cutout is counted, never
    # scored, and never made up: a NaN core is not a galaxy with zeros there
    refused: list[Refusal] = []
    frac = sidecar["config"].get("max_nonfinite_pixel_frac")  # None (older models): the default
    lenses = real_sky.lenses if real_sky else read_cutouts(lenses_path, refused=refused, max_nonfinite_frac=frac)
    standin = not nonlenses_path and not real_sky
    nonlenses = (real_sky.nonlenses if real_sky else sky_standins(lenses) if standin
                 else read_cutouts(nonlenses_path, refused=refused, max_nonfinite_frac=frac))
    if not lenses or not nonlenses:
        raise ContractError(f"{lenses_path} / {nonlenses_path or 'stand-ins'}: no usable cutouts "
                            f"(refused: {refusal_counts(refused)})")
    groups = {}
    for name, cutouts in (("lenses", lenses), ("nonlenses", nonlenses)):
        x = preprocess(_controls(cutouts), spec)
        logits, _ = logits_and_features(engine, x)
        groups[name] = (cutouts, x, calibration.probability(logits))
    for p in points:
        if not p.measurable:
            continue
        p.recall = recall = _rate(groups["lenses"][2] >= p.threshold)
        p.fpr_real = fpr_real = _rate(groups["nonlenses"][2] >= p.threshold)
        p.purity_at_synthetic_fpr = precision_at_prevalence(recall.rate, p.fpr, prevalence)
        # no false positive among n bounds the FPR by its Wilson upper limit, not by 0 (purity 1)
        fpr_for_purity = fpr_real.ci95[1] if fpr_real.k == 0 else fpr_real.rate
        p.purity_at_real_fpr = precision_at_prevalence(recall.rate, fpr_for_purity, prevalence)
    operating = next(p for p in points if p.operating)
    if not operating.measurable:
        log.warning("operating FPR %g is not measurable on the synthetic test split (%d distinct negatives): "
                    "recall and FPR on real galaxies are reported as not measurable", operating_fpr,
                    operating.n_synthetic_negatives)
    tables = {name: _table(c, p, radius_arcsec) for name, (c, _, p) in groups.items()}
    scores = pd.concat([t.assign(label=name) for name, t in tables.items()], ignore_index=True)

    def gallery_row(name: str, order: np.ndarray) -> list:
        cutouts, x, probs = groups[name]
        return [(x[i], f"p={probs[i]:.3f}\n{cutouts[i].galaxy_id}") for i in order[:GALLERY_SIZE]]

    lens_probs, non_probs = groups["lenses"][2], groups["nonlenses"][2]
    # without a measurable threshold the gallery shows the lowest-scored lenses
    missed = np.flatnonzero(lens_probs < (operating.threshold if operating.measurable else np.inf))
    plots = validation_plots(lens_probs, non_probs, points, standin,
                             gallery_row("lenses", missed[np.argsort(lens_probs[missed])]),
                             gallery_row("nonlenses", np.argsort(-non_probs, kind="stable")))
    report = ValidationReport(
        model=model_path, lenses_path=lenses_path,
        nonlenses_path=nonlenses_path or None, nonlenses_are_standins=standin,
        nonlenses_label=STANDIN_LABEL if standin else REAL_SKY_LABEL if real_sky else "real non-lenses",
        n_lenses=len(lenses), n_nonlenses=len(nonlenses),
        operating_fpr=operating_fpr, operating_threshold=operating.threshold,
        operating_measurable=operating.measurable,
        threshold_source="synthetic test split, calibrated probability at the nominal FPR",
        prevalence=prevalence, purity_target=purity_target,
        operating_points=points,
        known_lens_radius_arcsec=radius_arcsec,
        known_lens_matches={n: int(t["known_lens_name"].notna().sum()) for n, t in tables.items()},
        scores={n: [GalaxyScore(**r) for r in t[["galaxy_id", "probability", "known_lens_name",
                                                 "known_lens_grading"]].to_dict("records")] for n, t in tables.items()},
        realism_probe=realism or RealismProbe(False, "not computed"),
        purity_target_check=sky.purity_target(operating.recall, None if standin else operating.fpr_real,
                                              prevalence=prevalence, purity=purity_target),
        recall_by_grading=sky.recall_by_grading(lens_probs, real_sky.gradings, points) if real_sky else None,
        real_sky_set=real_sky.counts if real_sky else None,
        refused=refusal_counts(refused),
        plots={name: f"plots/{name}.png" for name in plots},
    )
    write_dataset(out_dir, {**{report.plots[name]: png for name, png in plots.items()},
                            "scores.csv": scores.to_csv(index=False).encode(),
                            VALIDATION_HTML: validation_html(report, plots).encode(),
                            VALIDATION_JSON: uris.json_text(asdict(report)).encode()},
                  VALIDATION_JSON, [model_path, lenses_path, nonlenses_path])
    return report
