"""The evaluation report: held-out test metrics, calibration, diagnostics and plots; report.json and one
self-contained report.html (plots embedded as base64 PNG), plus the PNGs under plots/ (docs/design.md §2 (graph), §5 (verdict))."""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass

import numpy as np

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
from halo_core.evaluation.control_substitutes import control_substitutes, substitutes_html
from halo_core.evaluation.diagnostics import (
    ARC_SNR_BINS,
    PSF_FWHM_BINS_ARCSEC,
    THETA_E_BINS_ARCSEC,
    arc_snr_zero_behaviour,
    binned_detection,
    completeness_trend,
    per_brick_auroc,
)
from halo_core.evaluation.promotion import Criterion, Verdict, report_verdict
from halo_core.evaluation.results import EvaluationReport, GatesReport
from halo_core.evaluation.saliency import (
    CORE_RADIUS_PX,
    MAX_SAMPLES,
    core_brightness_spread,
    core_perturbation,
    shortcut_diagnostics,
)
from halo_core.evaluation.shift import shift_suite
from halo_core.evaluation.validation import real_lens_realism, realism_html
from halo_core.metrics import OPERATING_THRESHOLD, OPERATING_TPR, classification_metrics
from halo_core.model.checkpoint import file_sha256, load_model, model_precision, model_spec
from halo_core.model.engine import Engine
from halo_core.model.inference import predict_logits
from halo_core.model.network import pick_device
from halo_core.outputs import write_dataset
from halo_core.reports import figures
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


def gallery(shards, samples: SampleSet, probs: np.ndarray, meta) -> bytes:
    """First the highest-scoring non-lenses, one per LRG (its injections share one control); then the
    lowest-scoring lenses."""
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
    return figures.gallery_png(rows)


def saliency_diagnostics(engine: Engine, shards, samples: SampleSet, calibration: Calibration,
                         go_no_go) -> tuple[dict, dict]:
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
                                  go_no_go) -> dict:
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
    return {**result, "n_lrgs_for_spread": int(len(lrgs))}


def shift_report(engine: Engine, spec, calibration: Calibration, report: EvaluationReport, raw_ece: float,
                 cfg: HaloConfig) -> dict:
    """The shift suite against this test split's own numbers (docs/design.md §8 (trust))."""
    in_distribution = {"auroc": report.metrics["auroc"], OPERATING_TPR: report.tpr_at(cfg.operating_fpr)["tpr"],
                       "ece_raw": raw_ece}
    if not cfg.shift.enabled:
        return {"measurable": False, "reason": "shift.enabled is false", "sets": {}, "in_distribution": in_distribution,
                "operating_fpr": cfg.operating_fpr}
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

    def bins(column: str, edges, negatives_binned: bool = False) -> list[dict]:
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
        calibration={
            **calibration.to_dict(),
            "ece_before": ece["uncalibrated"],
            "ece_after": ece[calibration.method],
            "alternative": {**alternative.to_dict(), "ece_after": ece[alternative.method]},
        },
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
    report.shift_suite = shift_report(engine, spec, calibration, report, ece["uncalibrated"]["ece"], cfg)
    key_figures = {"roc": figures.roc_figure(labels, probs, "test ROC"),
                   "reliability": figures.reliability_figure(ece),
                   "completeness_theta_e": figures.completeness_figure(theta_e_bins, "theta_E (arcsec)"),
                   "completeness_psf_fwhm": figures.completeness_figure(report.psf_fwhm_bins, "PSF FWHM r (arcsec)"),
                   "completeness_arc_snr": figures.completeness_figure(report.arc_snr_bins, "arc SNR (max pixel)"),
                   **figures.training_figures(history)}
    plots = {name: figures.png(fig, close=False) for name, fig in key_figures.items()}
    thumbnails = {thumbnail_path(name): figures.png(fig, figures.THUMBNAIL_WIDTH_PX)
                  for name, fig in key_figures.items()}
    plots |= {"confusion": figures.confusion_png(report.metrics["confusion_at_threshold"]),
              "gallery": gallery(shards, samples, probs, meta),
              "saliency": figures.saliency_png(saliency_figure, CORE_RADIUS_PX)}
    if report.shift_suite["sets"]:
        plots["shift_reliability"] = figures.shift_reliability_png(report.shift_suite["sets"])
    report.plots = {name: plot_path(name) for name in plots}
    log.info("writing %s: %d plots, report.html, report.json", out_dir, len(plots))
    banner = verdict_banner(report_verdict(cfg, report, context.gates), report, context)
    write_dataset(out_dir, {**{report.plots[name]: png for name, png in plots.items()}, **thumbnails,
                            REPORT_HTML: render_html(report, plots, banner).encode(),
                            REPORT_JSON: uris.json_text(report.to_dict()).encode()},
                  REPORT_JSON, [dataset_dir, model_path])
    return report


def _fmt(v, digits: int = 4, missing: str = "not measurable") -> str:
    return missing if v is None or v != v else f"{v:.{digits}f}"  # v != v: NaN


def _bins_table(rows: list[dict], quantity: str) -> str:
    body = "".join(
        f"<tr><td>{figures.bin_label(b)}</td><td>{b['n']}</td><td>{_fmt(b['completeness'], 3)} "
        f"[{_fmt(b['ci95'][0], 3)}, {_fmt(b['ci95'][1], 3)}]</td><td>{_fmt(b['auroc'])}</td>"
        f"<td>{b['n_negatives']}</td></tr>" for b in rows
    )
    return (f"<table><tr><th>{quantity}</th><th>n lenses</th><th>completeness [Wilson 95 %]</th>"
            f"<th>AUROC</th><th>n non-lenses</th></tr>{body}</table>")


def _scaling(c: dict) -> str:
    """A calibration's name and parameters: temperature scaling is p = sigmoid(logit / T)."""
    if c["method"] == "temperature":
        return f"temperature (T={1 / c['a']:.4f})"
    return f"{html.escape(c['method'])} (a={c['a']:.4f}, b={c['b']:.4f})"


def _shortcut_section(d: dict, png: bytes) -> str:
    focus = d["arc_localised_focus"]
    rows = [(figures.bin_label(b), b) for b in d["theta_e_bins"] if b["n"]] + [("all", d)]
    body = "".join(
        f"<tr><td>{label}</td><td>{b['n']}</td><td>{_fmt(b['saliency_arc_fraction'], 3)}</td>"
        f"<td>{_fmt(b['arc_area_fraction'], 3)}</td><td>{_fmt(b['saliency_core_fraction'], 3)}</td>"
        f"<td>{_fmt(b['mean_score'], 3)}</td><td>{_fmt(b['arc_occlusion_drop'], 3)}</td>"
        f"<td>{_fmt(b['core_occlusion_drop'], 3)}</td></tr>" for label, b in rows)
    return f"""<h2>Where the model looks (test lenses)</h2>
<p>Gradient &times; input saliency and occlusion on n={d['n']} lenses. Core: r &lt; {d['core_radius_px']:g} px.
Arc occlusion gives the stamp its control's pixels everywhere outside the core (all the injected light there),
core occlusion inside it. Saliency in arc: the share inside the pixels where the stamp exceeds its control by
&ge; {d['arc_footprint_sigma']:g} sky sigma in a band. Arc-localised focus (arc drop &ge; {focus['min_arc_occlusion_drop']:g},
core drop &le; {focus['max_core_to_arc_drop']:g} &times; arc drop): <b>{focus['passed']}</b>.</p>
<table><tr><th>theta_E (arcsec)</th><th>n</th><th>saliency in arc</th><th>arc area share</th>
<th>saliency in core</th><th>mean score</th><th>arc-occlusion drop</th><th>core-occlusion drop</th></tr>{body}</table>
{figures.img_tag(png, 'mean saliency per theta_E bin')}"""


def _core_perturbation_section(d: dict) -> str:
    rows = "".join(
        f"<tr><td>{name}</td><td>{c['n']}</td><td>{_fmt(c['mean_abs_change'], 4)}</td>"
        f"<td>{_fmt(c['offset_mean_abs_change'], 4)}</td>"
        + "".join(f"<td>{_fmt(v, 4)}</td>" for v in c["by_variant"].values()) + "</tr>"
        for name, c in d["per_class"].items())
    variants = next(iter(d["per_class"].values()))["by_variant"]
    spread = ", ".join(f"{b} {v:.1f}" for b, v in zip(BANDS, d["spread_sigma_px"]))
    return f"""<h2>Core perturbation (does the score follow core brightness?)</h2>
<p>PSF-shaped light added to and removed from the LRG centre, of the test LRGs' own core-brightness spread
(half their central 68 % range, over {d['n_lrgs_for_spread']} LRGs; sky sigma &times; px: {spread}),
preprocessed as the raw stamp would be. Blocking limit: mean |score change| over the two centred variants
&le; {d['max_mean_abs_change']:g} per class over &ge; {d['min_per_class']} samples: <b>{d['passed']}</b>
(measurable: {d['measurable']}). The same light ~3 px (0.8") off the centre is WARN evidence only
(a compact lensed image looks like that): <b>{d['offset_passed']}</b>.</p>
<table><tr><th>class</th><th>n</th><th>centred mean |change|</th><th>offset mean |change|</th>
{''.join(f'<th>{html.escape(k)}</th>' for k in variants)}</tr>
{rows}</table>"""


def _shift_section(d: dict, plots: dict[str, bytes]) -> str:
    ref, fpr = d["in_distribution"], d["operating_fpr"]
    head = (f"<h2>Shift suite: test sets outside the training distribution</h2><p>Calibrated probabilities hold "
            f"<b>in-distribution only</b>: the calibration was fitted on val, and each set below shows its raw and "
            f"calibrated ECE. In-distribution (test split): AUROC {_fmt(ref['auroc'])}, TPR at FPR {fpr:g} "
            f"{_fmt(ref[OPERATING_TPR], 3)}, raw ECE {_fmt(ref['ece_raw'], 3)}.</p>")
    if not d["measurable"]:
        return head + f"<p>Not measured: {html.escape(d['reason'])}.</p>"
    lim = d["limits"]
    rows = "".join(
        f"<tr><td>{name}</td><td>{s['n_lenses']} / {s['n_non_lenses']}</td><td>{_fmt(s['auroc'])}</td>"
        f"<td>{_fmt(s[OPERATING_TPR], 3, 'not measurable')}</td><td>{_fmt(s[OPERATING_THRESHOLD], 3)}</td>"
        f"<td>{_fmt(s['tpr_drop'], 3)}</td><td>{_fmt(s['auroc_drop'], 4)}</td><td>{_fmt(s['ece_raw'], 3)}</td>"
        f"<td>{_fmt(s['ece_calibrated'], 3)}</td></tr>" for name, s in d["sets"].items())
    return head + f"""<p>Each set has its own lenses and non-lenses and its own threshold at FPR {fpr:g} (seed {d['seed']}).
<code>independent</code> is rendered by lenstronomy with its own mass, source, neighbour, PSF and noise models; blocking:
TPR &ge; {lim['min_independent_tpr']:g} and drop &le; {lim['max_independent_drop']:g}. Stress sets move one axis of our
simulator: WARN on a TPR drop &gt; {lim['max_stress_drop']:g}; WARN on raw ECE &gt; {lim['max_raw_ece']:g} on any set.</p>
<table><tr><th>set</th><th>n lenses / non-lenses</th><th>AUROC</th><th>TPR at FPR {fpr:g}</th><th>threshold</th>
<th>TPR drop</th><th>AUROC drop</th><th>raw ECE</th><th>calibrated ECE</th></tr>{rows}</table>
{figures.img_tag(plots['shift_reliability'], 'reliability under shift')}"""


def _criterion_line(c: Criterion) -> str:
    observed = _fmt(c.observed, 4) if isinstance(c.observed, float) else html.escape(str(c.observed))
    n = f", n = {c.n}" if c.n is not None else ""
    return (f"<li><b>{html.escape(c.name)}</b>: {observed} (expected {html.escape(c.expected)}{n})"
            + (f" &mdash; {html.escape(c.reason)}" if c.reason else "") + "</li>")


def verdict_banner(verdict: Verdict, report: EvaluationReport, context: ReportContext) -> str:
    """The first thing the page says: GO or NO-GO, the failed criteria with their values, the profile,
    the run and the model. Unmeasured criteria are listed apart: they warn, they do not block."""
    failed = [c for c in verdict.criteria.values() if c.blocks]
    unmeasured = [c for c in verdict.criteria.values() if not c.measurable]
    title = "GO" if verdict.go else f"NO-GO: not promoted ({len(failed)} criteria failed)"
    where = (f"profile <b>{html.escape(context.profile or 'not given')}</b> &middot; run "
             f"<code>{html.escape(context.run_id or 'outside Dagster')}</code> &middot; model "
             f"<code>{report.model_sha256[:12]}</code> (training hash <code>{report.model_training_hash}</code>, "
             f"trained on data <code>{report.model_data_fingerprint}</code>)")
    return f"""<div class="verdict {'go' if verdict.go else 'nogo'}"><h1>{title}</h1><p>{where}</p>
{'<p>Failed:</p><ul>' + ''.join(_criterion_line(c) for c in failed) + '</ul>' if failed else ''}
{'<p>Not measurable here (warn, do not block):</p><ul>' + ''.join(_criterion_line(c) for c in unmeasured)
 + '</ul>' if unmeasured else ''}</div>"""


def render_html(report: EvaluationReport, plots: dict[str, bytes], banner: str = "") -> str:
    m = report.metrics
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>"
        for k, v in m.items() if isinstance(v, float) or v is None
    )
    pi = report.deployment_prevalence
    operating = "".join(
        f"<tr><td>{t['fpr']:g}</td><td>{_fmt(t['tpr'], missing='not measurable')}</td>"
        f"<td>{_fmt(t['threshold'])}</td><td>{_fmt(t['precision_at_prevalence'], 3, 'not measurable')}</td>"
        f"<td>{t['n_negatives']} ({t['n_distinct_negatives']} distinct)</td></tr>" for t in m["tpr_at_fpr"]
    )
    cal = report.calibration
    alt = cal["alternative"]
    trend = report.theta_e_completeness_trend
    brick = report.per_brick
    masked = report.arc_snr_zero
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>halo evaluation report</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd}}
img{{max-width:100%}}.verdict{{padding:0.5em 1em;border-radius:6px;margin-bottom:1em}}
.verdict.go{{background:#e3f4e3;border:2px solid #2e7d32}}.verdict.nogo{{background:#fdecea;border:2px solid #c62828}}</style>
</head><body>{banner}<h1>halo evaluation report</h1>
<p>Test split: n={m['n']} ({m['n_positives']} positives, {m['n_negatives']} negatives);
sample construction <code>{html.escape(report.sample_construction)}</code>;
model needs a control stamp: <b>{report.needs_control}</b>; config {report.config_hash}.<br>
model sha256 {report.model_sha256[:16]}, training hash {report.model_training_hash}, trained on data
{report.model_data_fingerprint}, evaluated on data {report.data_fingerprint}.</p>
<h2>Metrics (calibrated probabilities)</h2><table>{rows}</table>
<h2>Operating points</h2>
<p>Expected precision when a fraction {pi:g} of galaxies are lenses:
TPR&middot;&pi; / (TPR&middot;&pi; + FPR&middot;(1&minus;&pi;)), at the nominal FPR.
Not measurable where the test split has fewer than 1/FPR distinct negatives (injections on one LRG share its control).</p>
<table><tr><th>FPR</th><th>TPR</th><th>threshold</th><th>precision at &pi;={pi:g}</th><th>n negatives</th></tr>
{operating}</table>
{figures.img_tag(plots['roc'], 'ROC curve')} {figures.img_tag(plots['confusion'], 'confusion matrix')}
<h2>Calibration (fitted on val, ECE on test, equal-mass bins)</h2>
<table><tr><th>scaling</th><th>fitted on n (val)</th><th>ECE before</th><th>ECE after</th></tr>
<tr><td>{_scaling(cal)} (used downstream)</td><td>{cal['n_fit']}</td>
<td>{cal['ece_before']['ece']:.4f}</td><td>{cal['ece_after']['ece']:.4f}</td></tr>
<tr><td>{_scaling(alt)} (config <code>calibration</code> selects it)</td><td>{alt['n_fit']}</td>
<td>{cal['ece_before']['ece']:.4f}</td><td>{alt['ece_after']['ece']:.4f}</td></tr></table>
{figures.img_tag(plots['reliability'], 'reliability diagram')}
<h2>Completeness and AUROC by theta_E, PSF and arc SNR (threshold 0.5)</h2>
<p>AUROC: the bin's lenses against all non-lenses (theta_E, arc SNR) or against the non-lenses of the same PSF bin.
Completeness non-decreasing with theta_E within the Wilson intervals: <b>{not trend['violations']}</b>
({trend['n_bins_measured']} bins measured; violations: {html.escape(json.dumps(trend['violations']))}).</p>
{_bins_table(report.theta_e_bins, 'theta_E (arcsec)')}
{_bins_table(report.psf_fwhm_bins, 'PSF FWHM r (arcsec)')}
{_bins_table(report.arc_snr_bins, 'arc SNR (max pixel)')}
{figures.img_tag(plots['completeness_theta_e'], 'completeness by theta_E')}
{figures.img_tag(plots['completeness_psf_fwhm'], 'completeness by PSF FWHM')}
{figures.img_tag(plots['completeness_arc_snr'], 'completeness by arc SNR')}
<h2>Per-brick AUROC</h2><p>{brick['n_bricks']} of {brick['n_bricks_total']} bricks have at least
{brick['min_per_class']} test samples of each class; std of their AUROC: {_fmt(brick['std'])}.</p>
<h2>Masked arcs (arc_snr == 0)</h2><p>n={masked['n']}, scored as lens: {_fmt(masked['accuracy_as_lens'], 3)}
[{_fmt(masked['ci95'][0], 3)}, {_fmt(masked['ci95'][1], 3)}]</p>
<h2>Training</h2><p>best epoch {report.training['best_epoch'] + 1} of {len(report.training['history'])}.</p>
{figures.img_tag(plots['training_loss'], 'training and val loss')}
{figures.img_tag(plots['training_auroc'], 'val AUROC')}
{figures.img_tag(plots['training_lr'], 'learning rate')}
{_shortcut_section(report.shortcut_diagnostics, plots['saliency'])}
{substitutes_html(report.control_substitutes)}
{realism_html(report.realism_probe)}
{_core_perturbation_section(report.core_perturbation)}
{_shift_section(report.shift_suite, plots)}
<h2>Hardest cases</h2><p>Top: the highest-scoring non-lenses; bottom: the lowest-scoring lenses
(preprocessed stamps, asinh g,r,z).</p>
{figures.img_tag(plots['gallery'], 'gallery of hardest cases')}
<h2>Raw JSON</h2><pre>{html.escape(json.dumps(report.metrics, indent=1))}</pre>
</body></html>"""
