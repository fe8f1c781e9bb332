"""The real-galaxy validation page (validation.html) and its plots, from validate_real's ValidationReport (read
by attribute: rendering sits below evaluation and imports none of its types); the realism-probe section it
shares with the evaluation report."""

from __future__ import annotations

import html

from halo_core.reports.figures import gallery_png, png, score_histogram_figure
from halo_core.reports.markup import REPORT_STYLE, fmt, img_tag


def validation_plots(lens_probs, non_probs, thresholds: list, standin: bool, missed: list, top: list) -> dict:
    """PNGs: both score distributions, and the galleries of the ``missed`` lenses and the ``top``-scored
    non-lenses ((stamp, title) panels)."""
    return {"scores": png(score_histogram_figure(lens_probs, non_probs, thresholds, standin)),
            "missed_lenses": gallery_png([missed]), "top_nonlenses": gallery_png([top])}


def _ci(rate) -> str:
    if not rate:
        return "not measurable"
    return f"{rate.rate:.3f} [{rate.ci95[0]:.3f}, {rate.ci95[1]:.3f}] ({rate.k}/{rate.n})"


def realism_section(probe) -> str:
    """The RealismProbe (validation.real_lens_realism / realism_probe) as an HTML section."""
    if probe.auc is None:
        return f"<h2>Injection realism</h2><p>{probe.status}</p>"
    lo, hi = probe.ci95
    if not probe.measurable:
        verdict = f"indicative only: fewer than {probe.min_real_lenses} real lenses"
    elif not probe.passed:
        verdict = f"above {probe.max_auc:g}: injection-based completeness is a LOWER BOUND, not an estimate"
    else:
        verdict = f"at most {probe.max_auc:g}: the model does not tell the injections from real lenses"
    return (f"<h2>Injection realism</h2><p>Linear probe on the model's penultimate features, injected lenses "
            f"(n={probe.n_injected}) vs real lenses (n={probe.n_real}), {probe.folds}-fold, folds "
            f"disjoint by galaxy: AUC <b>{probe.auc:.3f}</b> [bootstrap 95 %: {lo:.3f}, {hi:.3f}]; "
            f"{verdict}. Status: {probe.status}.</p>")


def validation_html(report, plots: dict[str, bytes]) -> str:
    rows = "".join(
        f"<tr><td>{p.fpr:g}{' (operating)' if p.operating else ''}</td><td>{fmt(p.threshold)}</td>"
        f"<td>{_ci(p.recall)}</td><td>{_ci(p.fpr_real)}</td>"
        f"<td>{fmt(p.purity_at_synthetic_fpr, '.3f', 'n/a')}</td>"
        f"<td>{fmt(p.purity_at_real_fpr, '.3f', 'n/a')}</td></tr>"
        for p in report.operating_points)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>halo real-galaxy validation</title>
<style>{REPORT_STYLE}</style></head><body><h1>halo real-galaxy validation</h1>
<p>Model {html.escape(report.model)}; {report.n_lenses} real lenses from {html.escape(report.lenses_path)};
{report.n_nonlenses} {html.escape(report.nonlenses_label)}.
Thresholds: {html.escape(report.threshold_source)}; operating FPR {report.operating_fpr:g}.
Purity at prevalence {report.prevalence:g} (target &gt; {report.purity_target:g}).</p>
<table><tr><th>FPR (synthetic)</th><th>threshold</th><th>recall on real lenses [Wilson 95 %]</th>
<th>FPR on non-lenses [Wilson 95 %]</th><th>purity at synthetic FPR</th><th>purity at real FPR</th></tr>{rows}</table>
<p>Known lenses (lenscat, within {report.known_lens_radius_arcsec:g}"): {report.known_lens_matches}.</p>
{img_tag(plots['scores'], 'score distributions')}
<h2>Missed real lenses (below the operating threshold)</h2>{img_tag(plots['missed_lenses'], 'missed lenses')}
<h2>Highest-scored non-lenses</h2>{img_tag(plots['top_nonlenses'], 'top non-lenses')}
{_real_sky_section(report)}
{realism_section(report.realism_probe)}
</body></html>"""


def _real_sky_section(report) -> str:
    """The plan's purity target and, for a real-sky set, recall per lenscat grading."""
    t = report.purity_target_check
    target = (f"<h2>Sim-to-real purity target</h2><p>Purity {t.purity:g} at prevalence {t.prevalence:g}"
              + (f" and real recall {t.recall:.3f} needs FPR &le; {t.required_fpr:.2g}; measured FPR "
                 f"{t.fpr:.3g} [Wilson 95 %: {t.fpr_ci95[0]:.2g}, {t.fpr_ci95[1]:.2g}] on "
                 f"{t.n_nonlenses} non-lenses" if t.required_fpr is not None else "")
              + f". <b>{t.status}</b>.</p>")
    if not report.recall_by_grading:
        return target
    rows = "".join(f"<tr><td>{g}</td>" + "".join(f"<td>{_ci(p.recall)}</td>" for p in points) + "</tr>"
                   for g, points in report.recall_by_grading.items())
    head = "".join(f"<th>recall at FPR {p.fpr:g}</th>" for p in report.operating_points)
    counts = report.real_sky_set
    return (f"{target}<h2>Real lenses by lenscat grading</h2><table><tr><th>grading</th>{head}</tr>{rows}</table>"
            f"<p>Non-lenses: {counts.n_nonlenses} LRGs of {len(counts.test_bricks)} test-split bricks; "
            f"{counts.lrgs_dropped_near_known_lens} dropped within {counts.nonlens_min_separation_arcsec:g}\" "
            f"of a known lens. Lenses dropped by grading: {counts.lenses_dropped_by_grading or 'none'}.</p>")
