"""The evaluation report's page (report.html) and plots, from an EvaluationReport and the arrays it was
measured on (docs/design.md §5 (verdict)). The report objects are read, not imported: evaluation calls
this package, so it cannot import evaluation (tests/core/test_layout.py)."""

from __future__ import annotations

import html
import json
from dataclasses import asdict

import numpy as np

from halo_core.data.stamps import BANDS
from halo_core.reports import figures
from halo_core.reports.markup import REPORT_STYLE, bin_label, fmt, img_tag
from halo_core.reports.validation import realism_section


def report_plots(report, roc: tuple[np.ndarray, np.ndarray], ece: dict, history: list,
                 saliency_figure: dict, hardest: list) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(PNGs by name, thumbnails of the key plots by name) of the EvaluationReport ``report``: the test
    ``roc`` curve (FPR, TPR), the CalibrationError per scaling, the training ``history`` (EpochRecords), the mean
    saliency maps and the ``hardest`` cases ((stamp, title) groups)."""
    key_figures = {"roc": figures.roc_figure(*roc, "test ROC"),
                   "reliability": figures.reliability_figure({name: (e.ece, e.bins) for name, e in ece.items()}),
                   "completeness_theta_e": figures.completeness_figure(report.theta_e_bins, "theta_E (arcsec)"),
                   "completeness_psf_fwhm": figures.completeness_figure(report.psf_fwhm_bins, "PSF FWHM r (arcsec)"),
                   "completeness_arc_snr": figures.completeness_figure(report.arc_snr_bins, "arc SNR (max pixel)"),
                   **figures.training_figures(history)}
    plots = {name: figures.png(fig, close=False) for name, fig in key_figures.items()}
    thumbnails = {name: figures.png(fig, figures.THUMBNAIL_WIDTH_PX) for name, fig in key_figures.items()}
    plots |= {"confusion": figures.confusion_png(report.metrics["confusion_at_threshold"]),
              "gallery": figures.gallery_png(hardest),
              "saliency": figures.saliency_png(saliency_figure, report.shortcut_diagnostics.core_radius_px)}
    if report.shift_suite.sets:
        plots["shift_reliability"] = figures.shift_reliability_png(report.shift_suite.sets)
    return plots, thumbnails


def _bins_table(rows: list, quantity: str) -> str:
    body = "".join(
        f"<tr><td>{bin_label(b.lo, b.hi)}</td><td>{b.n}</td><td>{fmt(b.completeness, '.3f')} "
        f"[{fmt(b.ci95[0], '.3f')}, {fmt(b.ci95[1], '.3f')}]</td><td>{fmt(b.auroc)}</td>"
        f"<td>{b.n_negatives}</td></tr>" for b in rows
    )
    return (f"<table><tr><th>{quantity}</th><th>n lenses</th><th>completeness [Wilson 95 %]</th>"
            f"<th>AUROC</th><th>n non-lenses</th></tr>{body}</table>")


def _scaling(c) -> str:
    """A calibration's name and parameters: temperature scaling is p = sigmoid(logit / T)."""
    if c.method == "temperature":
        return f"temperature (T={1 / c.a:.4f})"
    return f"{html.escape(c.method)} (a={c.a:.4f}, b={c.b:.4f})"


def _shortcut_section(d, png: bytes) -> str:
    focus = d.arc_localised_focus
    rows = [(bin_label(b.lo, b.hi), b) for b in d.theta_e_bins if b.n] + [("all", d)]
    body = "".join(
        f"<tr><td>{label}</td><td>{b.n}</td><td>{fmt(b.saliency_arc_fraction, '.3f')}</td>"
        f"<td>{fmt(b.arc_area_fraction, '.3f')}</td><td>{fmt(b.saliency_core_fraction, '.3f')}</td>"
        f"<td>{fmt(b.mean_score, '.3f')}</td><td>{fmt(b.arc_occlusion_drop, '.3f')}</td>"
        f"<td>{fmt(b.core_occlusion_drop, '.3f')}</td></tr>" for label, b in rows)
    return f"""<h2>Where the model looks (test lenses)</h2>
<p>Gradient &times; input saliency and occlusion on n={d.n} lenses. Core: r &lt; {d.core_radius_px:g} px.
Arc occlusion gives the stamp its control's pixels everywhere outside the core (all the injected light there),
core occlusion inside it. Saliency in arc: the share inside the pixels where the stamp exceeds its control by
&ge; {d.arc_footprint_sigma:g} sky sigma in a band. Arc-localised focus (arc drop &ge; {focus.min_arc_occlusion_drop:g},
core drop &le; {focus.max_core_to_arc_drop:g} &times; arc drop): <b>{focus.passed}</b>.</p>
<table><tr><th>theta_E (arcsec)</th><th>n</th><th>saliency in arc</th><th>arc area share</th>
<th>saliency in core</th><th>mean score</th><th>arc-occlusion drop</th><th>core-occlusion drop</th></tr>{body}</table>
{img_tag(png, 'mean saliency per theta_E bin')}"""


def _core_perturbation_section(d) -> str:
    rows = "".join(
        f"<tr><td>{name}</td><td>{c.n}</td><td>{fmt(c.mean_abs_change)}</td>"
        f"<td>{fmt(c.offset_mean_abs_change)}</td>"
        + "".join(f"<td>{fmt(v)}</td>" for v in c.by_variant.values()) + "</tr>"
        for name, c in d.per_class.items())
    variants = next(iter(d.per_class.values())).by_variant
    spread = ", ".join(f"{b} {v:.1f}" for b, v in zip(BANDS, d.spread_sigma_px))
    return f"""<h2>Core perturbation (does the score follow core brightness?)</h2>
<p>PSF-shaped light added to and removed from the LRG centre, of the test LRGs' own core-brightness spread
(half their central 68 % range, over {d.n_lrgs_for_spread} LRGs; sky sigma &times; px: {spread}),
preprocessed as the raw stamp would be. Blocking limit: mean |score change| over the two centred variants
&le; {d.max_mean_abs_change:g} per class over &ge; {d.min_per_class} samples: <b>{d.passed}</b>
(measurable: {d.measurable}). The same light ~3 px (0.8") off the centre is WARN evidence only
(a compact lensed image looks like that): <b>{d.offset_passed}</b>.</p>
<table><tr><th>class</th><th>n</th><th>centred mean |change|</th><th>offset mean |change|</th>
{''.join(f'<th>{html.escape(k)}</th>' for k in variants)}</tr>
{rows}</table>"""


def _shift_section(d, plots: dict[str, bytes]) -> str:
    ref, fpr = d.in_distribution, d.operating_fpr
    head = (f"<h2>Shift suite: test sets outside the training distribution</h2><p>Calibrated probabilities hold "
            f"<b>in-distribution only</b>: the calibration was fitted on val, and each set below shows its raw and "
            f"calibrated ECE. In-distribution (test split): AUROC {fmt(ref.auroc)}, TPR at FPR {fpr:g} "
            f"{fmt(ref.tpr_at_operating_fpr, '.3f')}, raw ECE {fmt(ref.ece_raw, '.3f')}.</p>")
    if not d.measurable:
        return head + f"<p>Not measured: {html.escape(d.reason)}.</p>"
    lim = d.limits
    rows = "".join(
        f"<tr><td>{name}</td><td>{s.n_lenses} / {s.n_non_lenses}</td><td>{fmt(s.auroc)}</td>"
        f"<td>{fmt(s.tpr_at_operating_fpr, '.3f')}</td><td>{fmt(s.threshold_at_operating_fpr, '.3f')}</td>"
        f"<td>{fmt(s.tpr_drop, '.3f')}</td><td>{fmt(s.auroc_drop)}</td><td>{fmt(s.ece_raw, '.3f')}</td>"
        f"<td>{fmt(s.ece_calibrated, '.3f')}</td></tr>" for name, s in d.sets.items())
    return head + f"""<p>Each set has its own lenses and non-lenses and its own threshold at FPR {fpr:g} (seed {d.seed}).
<code>independent</code> is rendered by lenstronomy with its own mass, source, neighbour, PSF and noise models; blocking:
TPR &ge; {lim.min_independent_tpr:g} and drop &le; {lim.max_independent_drop:g}. Stress sets move one axis of our
simulator: WARN on a TPR drop &gt; {lim.max_stress_drop:g}; WARN on raw ECE &gt; {lim.max_raw_ece:g} on any set.</p>
<table><tr><th>set</th><th>n lenses / non-lenses</th><th>AUROC</th><th>TPR at FPR {fpr:g}</th><th>threshold</th>
<th>TPR drop</th><th>AUROC drop</th><th>raw ECE</th><th>calibrated ECE</th></tr>{rows}</table>
{img_tag(plots['shift_reliability'], 'reliability under shift')}"""


def _substitutes_section(result: dict | None) -> str:
    """control_substitutes' AUROCs, for a model that reads a control stamp."""
    if not result:
        return ""
    a = result["auroc"]
    return (f"<h2>Without a control (the plan's Q7)</h2><p>Test AUROC (n={result['n']}) with the true control "
            f"{a['true_control']:.4f}; with the image duplicated {a['duplicated_image']:.4f}; with a median LRG "
            f"template of {result['template_rows']} train controls {a['median_template']:.4f}. A real galaxy "
            "only ever offers the last two.</p>")


def _criterion_line(c) -> str:
    observed = fmt(c.observed) if isinstance(c.observed, float) else html.escape(str(c.observed))
    n = f", n = {c.n}" if c.n is not None else ""
    return (f"<li><b>{html.escape(c.name)}</b>: {observed} (expected {html.escape(c.expected)}{n})"
            + (f" &mdash; {html.escape(c.reason)}" if c.reason else "") + "</li>")


def verdict_banner(verdict, report, context) -> str:
    """The first thing the page says (a promotion.Verdict on the EvaluationReport ``report``, made where
    ``context``, a report.ReportContext, says): GO or NO-GO, the failed criteria with their values, the
    profile, the run and the model. Unmeasured criteria are listed apart: they warn, they do not block."""
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


def report_html(report, plots: dict[str, bytes], banner: str = "") -> str:
    """report.html: the EvaluationReport ``report`` with its ``plots`` embedded, after the verdict ``banner``."""
    m = report.metrics
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td></tr>"
        for k, v in m.items() if isinstance(v, float) or v is None
    )
    pi = report.deployment_prevalence
    operating = "".join(
        f"<tr><td>{t['fpr']:g}</td><td>{fmt(t['tpr'])}</td>"
        f"<td>{fmt(t['threshold'])}</td><td>{fmt(t['precision_at_prevalence'], '.3f')}</td>"
        f"<td>{t['n_negatives']} ({t['n_distinct_negatives']} distinct)</td></tr>" for t in m["tpr_at_fpr"]
    )
    cal = report.calibration
    alt = cal.alternative
    trend = report.theta_e_completeness_trend
    brick = report.per_brick
    masked = report.arc_snr_zero
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>halo evaluation report</title>
<style>{REPORT_STYLE}.verdict{{padding:0.5em 1em;border-radius:6px;margin-bottom:1em}}
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
{img_tag(plots['roc'], 'ROC curve')} {img_tag(plots['confusion'], 'confusion matrix')}
<h2>Calibration (fitted on val, ECE on test, equal-mass bins)</h2>
<table><tr><th>scaling</th><th>fitted on n (val)</th><th>ECE before</th><th>ECE after</th></tr>
<tr><td>{_scaling(cal)} (used downstream)</td><td>{cal.n_fit}</td>
<td>{cal.ece_before.ece:.4f}</td><td>{cal.ece_after.ece:.4f}</td></tr>
<tr><td>{_scaling(alt)} (config <code>calibration</code> selects it)</td><td>{alt.n_fit}</td>
<td>{cal.ece_before.ece:.4f}</td><td>{alt.ece_after.ece:.4f}</td></tr></table>
{img_tag(plots['reliability'], 'reliability diagram')}
<h2>Completeness and AUROC by theta_E, PSF and arc SNR (threshold 0.5)</h2>
<p>AUROC: the bin's lenses against all non-lenses (theta_E, arc SNR) or against the non-lenses of the same PSF bin.
Completeness non-decreasing with theta_E within the Wilson intervals: <b>{not trend.violations}</b>
({trend.n_bins_measured} bins measured; violations: {html.escape(json.dumps([asdict(v) for v in trend.violations]))}).</p>
{_bins_table(report.theta_e_bins, 'theta_E (arcsec)')}
{_bins_table(report.psf_fwhm_bins, 'PSF FWHM r (arcsec)')}
{_bins_table(report.arc_snr_bins, 'arc SNR (max pixel)')}
{img_tag(plots['completeness_theta_e'], 'completeness by theta_E')}
{img_tag(plots['completeness_psf_fwhm'], 'completeness by PSF FWHM')}
{img_tag(plots['completeness_arc_snr'], 'completeness by arc SNR')}
<h2>Per-brick AUROC</h2><p>{brick.n_bricks} of {brick.n_bricks_total} bricks have at least
{brick.min_per_class} test samples of each class; std of their AUROC: {fmt(brick.std)}.</p>
<h2>Masked arcs (arc_snr == 0)</h2><p>n={masked.n}, scored as lens: {fmt(masked.accuracy_as_lens, '.3f')}
[{fmt(masked.ci95[0], '.3f')}, {fmt(masked.ci95[1], '.3f')}]</p>
<h2>Training</h2><p>best epoch {report.training['best_epoch'] + 1} of {len(report.training['history'])}.</p>
{img_tag(plots['training_loss'], 'training and val loss')}
{img_tag(plots['training_auroc'], 'val AUROC')}
{img_tag(plots['training_lr'], 'learning rate')}
{_shortcut_section(report.shortcut_diagnostics, plots['saliency'])}
{_substitutes_section(report.control_substitutes)}
{realism_section(report.realism_probe)}
{_core_perturbation_section(report.core_perturbation)}
{_shift_section(report.shift_suite, plots)}
<h2>Hardest cases</h2><p>Top: the highest-scoring non-lenses; bottom: the lowest-scoring lenses
(preprocessed stamps, asinh g,r,z).</p>
{img_tag(plots['gallery'], 'gallery of hardest cases')}
<h2>Raw JSON</h2><pre>{html.escape(json.dumps(report.metrics, indent=1))}</pre>
</body></html>"""
