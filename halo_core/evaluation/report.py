"""The evaluation report: held-out test metrics, calibration, diagnostics and plots; report.json and one
self-contained report.html (plots embedded as base64 PNG), plus the PNGs under plots/, drawn by
halo_core.reports.evaluation (docs/design.md §2 (graph), §5 (verdict))."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

from halo_core import uris
from halo_core.config import HaloConfig
from halo_core.data.loader import gather
from halo_core.data.preprocess import reapply_to_input
from halo_core.data.samples import CONTROL, STAMP, SampleSet, balanced_subset, load_split_samples
from halo_core.data.shards import data_fingerprint, dataset_spec, open_split
from halo_core.data.splits import lrg_ids
from halo_core.data.stamps import BANDS, PIXEL_SCALE_ARCSEC
from halo_core.errors import CheckpointError
from halo_core.evaluation.calibration import Calibration, ValidationFit, expected_calibration_error, sigmoid
from halo_core.evaluation.control_substitutes import control_substitutes
from halo_core.evaluation.diagnostics import (
    ARC_SNR_BINS,
    PSF_FWHM_BINS_ARCSEC,
    THETA_E_BINS_ARCSEC,
    arc_snr_zero_behaviour,
    binned_detection,
    completeness_trend,
    per_brick_auroc,
)
from halo_core.evaluation.promotion import report_verdict
from halo_core.evaluation.results import (
    CalibrationSummary,
    CorePerturbation,
    DetectionBin,
    EvaluationReport,
    GatesReport,
    InDistribution,
    ScalingOnTest,
    ShiftSuite,
    ShortcutDiagnostics,
)
from halo_core.evaluation.saliency import MAX_SAMPLES, core_brightness_spread, core_perturbation, shortcut_diagnostics
from halo_core.evaluation.shift import shift_suite
from halo_core.evaluation.validation import real_lens_realism
from halo_core.metrics import classification_metrics
from halo_core.model.checkpoint import file_sha256, load_model, model_precision, model_spec
from halo_core.model.engine import Engine
from halo_core.model.inference import predict_logits
from halo_core.model.network import pick_device
from halo_core.outputs import write_dataset
from halo_core.training.monitors import monitor_report, progress_summaries, run_history

log = logging.getLogger(__name__)
REPORT_JSON, REPORT_HTML = "report.json", "report.html"
GALLERY_SIZE = 8  # stamps per group: highest-scoring negatives, lowest-scoring positives
# the plots a reviewer needs on the asset page without opening report.html, each with its thumbnail
KEY_PLOTS = ("roc", "reliability", "completeness_theta_e", "completeness_psf_fwhm", "completeness_arc_snr",
             "training_loss", "training_auroc", "training_lr")


def plot_path(name: str) -> str:
    return f"plots/{name}.png"


def thumbnail_path(name: str) -> str:
    return f"plots/thumbnails/{name}.png"


def hardest_cases(shards, samples: SampleSet, probs: np.ndarray, meta) -> list[list[tuple[np.ndarray, str]]]:
    """The gallery's (stamp, title) groups: first the highest-scoring non-lenses, one per LRG (its
    injections share one control); then the lowest-scoring lenses."""
    neg = np.flatnonzero(samples.labels == 0)
    pos = np.flatnonzero(samples.labels == 1)
    neg = neg[np.argsort(-probs[neg], kind="stable")]
    _, first = np.unique(lrg_ids(meta).to_numpy()[neg], return_index=True)
    picks = {"non-lens": neg[np.sort(first)][:GALLERY_SIZE],
             "lens": pos[np.argsort(probs[pos], kind="stable")[:GALLERY_SIZE]]}
    rows = []
    for group, indices in picks.items():
        row = []
        for i in indices:
            m = meta.iloc[i]
            arc = (f"thetaE {m['theta_e_arcsec']:.2f}\" snr {m['arc_snr']:.1f}" if group == "lens"
                   else "control (no arc)")
            stamp = np.asarray(shards.pairs[samples.rows[i], samples.slots[i]])  # (3, 64, 64) preprocessed
            row.append((stamp, f"{group} p={probs[i]:.3f}\n{m['task_id']}\n{arc}"))
        rows.append(row)
    return rows


def saliency_diagnostics(engine: Engine, shards, samples: SampleSet, calibration: Calibration,
                         go_no_go) -> tuple[ShortcutDiagnostics, dict]:
    """Shortcut diagnostics on a deterministic subset of the test lenses (stamp with its own control)."""
    pos = np.flatnonzero((samples.labels == 1) & (samples.slots == STAMP))
    if len(pos) > MAX_SAMPLES:
        pos = np.sort(np.random.default_rng(0).choice(pos, MAX_SAMPLES, replace=False))
    rows = samples.rows[pos]
    meta = shards.meta.iloc[rows]
    return shortcut_diagnostics(
        engine, np.asarray(shards.pairs[rows, STAMP]), np.asarray(shards.pairs[rows, CONTROL]),
        meta["theta_e_arcsec"].to_numpy(float), calibration.probability,
        with_control=samples.with_control, min_arc_drop=go_no_go.min_arc_occlusion_drop,
        max_core_to_arc_drop=go_no_go.max_core_to_arc_occlusion_drop)


PERTURBATION_MAX_PER_CLASS = 1000  # test samples per class the core-perturbation test scores (5 passes each)
NOMINAL_PSF_FWHM_ARCSEC = (1.45, 1.30, 1.20)  # g, r, z, where a dataset has no psf_fwhm_used_* columns


def psf_fwhm_px(meta) -> np.ndarray:
    """(N, 3) per-band PSF FWHM in pixels from the psf_fwhm_used_* columns (nominal DR10 seeing where absent)."""
    cols = [meta[f"psf_fwhm_used_{b}"].to_numpy(float) if f"psf_fwhm_used_{b}" in meta.columns
            else np.full(len(meta), nominal) for b, nominal in zip(BANDS, NOMINAL_PSF_FWHM_ARCSEC)]
    fwhm = np.stack(cols, axis=1)
    return np.where(np.isfinite(fwhm), fwhm, np.array(NOMINAL_PSF_FWHM_ARCSEC)) / PIXEL_SCALE_ARCSEC


def core_perturbation_diagnostics(engine: Engine, shards, samples: SampleSet, spec, calibration: Calibration,
                                  go_no_go) -> CorePerturbation:
    """The core-perturbation test on up to PERTURBATION_MAX_PER_CLASS test samples of each class, with the
    spread of the split's own LRG core brightness (distinct LRGs, measured on the raw controls when the
    filtered dataset was built)."""
    chosen = balanced_subset(samples, 2 * PERTURBATION_MAX_PER_CLASS, 0)
    x = gather(shards, samples, chosen)
    meta = shards.meta.iloc[samples.rows[chosen]]
    lrgs = shards.meta.loc[~lrg_ids(shards.meta).duplicated()]
    spread = core_brightness_spread(lrgs[[f"ctrl_core_flux_sigma_{b}" for b in BANDS]].to_numpy(float))
    result = core_perturbation(engine, x, samples.labels[chosen], psf_fwhm_px(meta), spread,
                               lambda v: reapply_to_input(v, spec), calibration.probability,
                               max_mean_change=go_no_go.max_core_perturbation_change,
                               min_per_class=go_no_go.core_perturbation_min_per_class)
    result.n_lrgs_for_spread = int(len(lrgs))
    return result


def shift_report(engine: Engine, spec, calibration: Calibration, report: EvaluationReport, raw_ece: float,
                 cfg: HaloConfig) -> ShiftSuite:
    """The shift suite against this test split's own numbers (docs/design.md §8 (trust))."""
    in_distribution = InDistribution(report.metrics["auroc"], report.tpr_at(cfg.operating_fpr)["tpr"], raw_ece)
    if not cfg.shift.enabled:
        return ShiftSuite(False, "shift.enabled is false", {}, in_distribution, operating_fpr=cfg.operating_fpr)
    return shift_suite(engine, spec, calibration.probability, in_distribution, cfg.shift,
                       report.needs_control, cfg.operating_fpr)


@dataclass(frozen=True)
class ReportContext:
    """Where a report was made, for its banner: the profile, the run, and the shortcut gates (gates.json)
    measured on the same data, without which the selection null reads "not measured yet"."""

    profile: str = ""
    run_id: str = ""
    gates: GatesReport | None = None


def evaluate(cfg: HaloConfig, dataset_dir: str, model_path: str, fit: ValidationFit, out_dir: str,
             context: ReportContext = ReportContext()) -> EvaluationReport:
    """Score the test split with the trained model and ``fit.chosen`` calibration (``fit.alternative`` for
    comparison); write report.json, report.html (opening with the GO / NO-GO verdict) and plots/."""
    from halo_core.reports.evaluation import report_html, report_plots, verdict_banner  # matplotlib only here

    calibration = fit.chosen
    model, sidecar = load_model(model_path)
    if "best_epoch" not in sidecar:
        raise CheckpointError(f"{model_path}: a per-epoch checkpoint (best.pt, last.pt, epoch_*.pt) has no training "
                              "summary; evaluate the model.pt that `halo train` writes beside it")
    history = run_history(sidecar)
    spec = dataset_spec(dataset_dir)
    spec.require_same(model_spec(sidecar), f"{model_path} vs {dataset_dir}")
    device = pick_device(cfg.device)
    model = model.to(device)
    shards, samples = load_split_samples(cfg, dataset_dir, "test")
    precision = model_precision(sidecar)  # the numerics of training, so of the threshold measured here
    engine = Engine(model, precision, device, batch_size=cfg.batch_size)
    # each stage below takes seconds to a minute on a laptop: say which one runs (docs/design.md §6)
    log.info("evaluating %s: scoring %d test samples (%s)", model_path, len(samples), precision)
    logits = predict_logits(model, shards, samples, cfg.batch_size, device, precision)
    probs = calibration.probability(logits)
    labels = samples.labels.astype(int)
    meta = shards.meta.iloc[samples.rows].reset_index(drop=True)
    pos = labels == 1

    alternative = fit.alternative  # the scaling not in use, fitted on the same val logits
    ece = {"uncalibrated": expected_calibration_error(sigmoid(logits), labels),
           calibration.method: expected_calibration_error(probs, labels),
           alternative.method: expected_calibration_error(alternative.probability(logits), labels)}

    masked_rows = np.flatnonzero(shards.meta["arc_snr"].to_numpy(dtype=float) == 0)
    masked = SampleSet(masked_rows, np.full(len(masked_rows), STAMP, np.int8),
                       np.zeros(len(masked_rows), np.float32), samples.with_control)
    masked_probs = calibration.probability(predict_logits(model, shards, masked, cfg.batch_size, device, precision))

    def bins(column: str, edges, negatives_binned: bool = False) -> list[DetectionBin]:
        values = meta[column].to_numpy(dtype=float)
        return binned_detection(values[pos], probs[pos], probs[~pos], edges,
                                neg_values=values[~pos] if negatives_binned else None)

    theta_e_bins = bins("theta_e_arcsec", THETA_E_BINS_ARCSEC)
    log.info("shortcut diagnostics: saliency and occlusion of the test lenses")
    shortcut, saliency_figure = saliency_diagnostics(engine, shards, samples, calibration, cfg.go_no_go)
    log.info("metrics, per-brick AUROC, realism probe and core perturbation")
    report = EvaluationReport(
        split="test",
        model=model_path,
        # which model, trained on which data, was evaluated on which data: promotion refuses a report
        # that names another model (docs/design.md §5 (verdict))
        model_sha256=file_sha256(model_path),
        model_training_hash=sidecar["training_hash"],
        model_data_fingerprint=sidecar["data_fingerprint"],
        data_fingerprint=data_fingerprint(dataset_dir),
        config_hash=cfg.config_hash(),
        model_config_hash=sidecar["config_hash"],
        needs_control=sidecar["needs_control"],
        precision=precision,
        sample_construction=cfg.sample_construction,
        metrics=classification_metrics(labels, probs, prevalence=cfg.deployment_prevalence,
                                       n_distinct_negatives=int(lrg_ids(meta[~pos]).nunique()), names=cfg.metrics),
        calibration=CalibrationSummary(**calibration.to_dict(), ece_after=ece[calibration.method],
                                       ece_before=ece["uncalibrated"],
                                       alternative=ScalingOnTest(**alternative.to_dict(), ece_after=ece[alternative.method])),
        deployment_prevalence=cfg.deployment_prevalence,
        arc_snr_zero=arc_snr_zero_behaviour(masked_probs),
        per_brick=per_brick_auroc(meta, labels, probs, cfg.go_no_go.brick_min_per_class),
        theta_e_bins=theta_e_bins,
        theta_e_completeness_trend=completeness_trend(theta_e_bins),
        # controls share their LRG's PSF, so PSF bins compare lenses with non-lenses seen alike
        psf_fwhm_bins=bins("psfsize_r", PSF_FWHM_BINS_ARCSEC, negatives_binned=True),
        arc_snr_bins=bins("arc_snr", ARC_SNR_BINS),
        training={"best_epoch": sidecar["best_epoch"], "history": sidecar["history"],
                  "progress": progress_summaries(history)},
        monitors=monitor_report(sidecar),
        shortcut_diagnostics=shortcut,
        # real galaxies: what a 6-channel model gets without a control; do injections look real?
        control_substitutes=(control_substitutes(engine, shards, samples, open_split(dataset_dir, "train"), cfg.seed)
                             if samples.with_control else None),
        realism_probe=real_lens_realism(cfg, engine, model_spec(sidecar), shards, samples),
        core_perturbation=core_perturbation_diagnostics(engine, shards, samples, spec, calibration, cfg.go_no_go),
    )
    log.info("shift suite: %s", f"{cfg.shift.n_per_class} per class and set" if cfg.shift.enabled else "off")
    report.shift_suite = shift_report(engine, spec, calibration, report, ece["uncalibrated"].ece, cfg)
    plots, thumbnails = report_plots(report, roc_curve(labels, probs)[:2], ece, history, saliency_figure,
                                     hardest_cases(shards, samples, probs, meta))
    report.plots = {name: plot_path(name) for name in plots}
    log.info("writing %s: %d plots, report.html, report.json", out_dir, len(plots))
    banner = verdict_banner(report_verdict(cfg, report, context.gates), report, context)
    write_dataset(out_dir, {**{report.plots[name]: png for name, png in plots.items()},
                            **{thumbnail_path(name): png for name, png in thumbnails.items()},
                            REPORT_HTML: report_html(report, plots, banner).encode(),
                            REPORT_JSON: uris.json_text(report.to_dict()).encode()},
                  REPORT_JSON, [dataset_dir, model_path])
    return report
