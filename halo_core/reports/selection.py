"""The selection function's page (selection_function.html) and plots, from survey.selection's
SelectionFunction, read by its attributes (docs/design.md §13 (survey path))."""

from __future__ import annotations

import html

from halo_core.reports import figures
from halo_core.reports.markup import fmt, img_tag


def selection_plots(result, pooled) -> dict[str, bytes]:
    """PNGs: the marginal completeness along each axis (``completeness_<axis>``) and the ``pooled``
    theta_E x source magnitude heat map (``heatmap``)."""
    pngs = {f"completeness_{axis}": figures.png(figures.selection_marginal_figure(result, axis))
            for axis in result.axes}
    return {**pngs, "heatmap": figures.png(figures.selection_heatmap_figure(pooled))}


def _hosts_section(hosts, per_cell: int) -> str:
    if hosts.source == "simulated":
        return "<p>Hosts: the embedded simulator's LRGs, observed at each cell's imposed PSF and depth.</p>"
    rows = "".join(
        f"<tr><td>{axis}</td><td>{b.bin}</td><td>{fmt(b.low, 'g', '&ndash;')}</td>"
        f"<td>{fmt(b.high, 'g', '&ndash;')}</td><td>{b.value:g}</td><td>{b.n_hosts}</td></tr>"
        for axis, bins in hosts.bins.items() for b in bins)
    return f"""<p>Hosts: {hosts.n_hosts} real cutouts from {html.escape(hosts.path)} ({html.escape(hosts.selected)};
{len(hosts.bricks)} brick(s)).
The PSF and depth axes are not imposed: each host sits in the bin of its own measured values (PSF FWHM in r from
its metadata: {hosts.psf_source.get('metadata', 0)} hosts, the nominal default where the metadata has none:
{hosts.psf_source.get('default', 0)}; depth: psfdepth_r from the metadata for
{hosts.depth_source.get('metadata', 0)}, else the 5-sigma point-source depth of the cutout's measured sky sigma
for {hosts.depth_source.get('sky_sigma', 0)}). A cell's value on those axes is the median of its bin's hosts; a
cell's n is its hosts, one injection each; below {per_cell} it is not measurable.</p>
<table><tr><th>axis</th><th>bin</th><th>from</th><th>to</th><th>value (median)</th><th>hosts</th></tr>{rows}</table>"""


def selection_html(result, pngs: dict[str, bytes]) -> str:
    axes = list(result.axes)  # survey.selection.AXES, in its order
    marginals = "".join(img_tag(pngs[f"completeness_{a}"], f"completeness along {a}") for a in axes)
    head = "".join(f"<th>{h}</th>" for h in (*axes, "n", "detected", "completeness", "95 % Wilson"))
    body = "".join(
        "<tr>" + "".join(f"<td>{getattr(r, a):g}</td>" for a in axes)
        + f"<td>{r.n}</td><td>{r.detected}</td><td>{fmt(r.completeness, '.2f', '&ndash;')}"
        + ("" if r.measurable else " (not measurable)")
        + f"</td><td>[{fmt(r.ci_low, '.2f', '&ndash;')}, {fmt(r.ci_high, '.2f', '&ndash;')}]</td></tr>"
        for r in result.cells)
    per_cell = result.injections_per_cell
    hosts = _hosts_section(result.hosts, per_cell)
    fp = result.controls_above_threshold
    if fp:
        hosts += (f"<p>The hosts' own cutouts, without an arc: {fp.above_threshold} of {fp.n} "
                  f"({fp.rate:.2f}, 95 % Wilson [{fp.ci_low:.2f}, {fp.ci_high:.2f}]"
                  f"{'' if fp.measurable else ', not measurable'}) at or above the threshold: the model's "
                  "false-positive rate on these very hosts. A completeness means little where it is high.</p>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>halo selection function</title>
<style>body{{font-family:sans-serif;margin:1em}} td,th{{padding:2px 8px;text-align:right}}</style></head><body>
<h1>Selection function of model {html.escape(result.model_version)}</h1>
<p>Injection-recovery ({html.escape(result.injections)}): {result.n} injections, one per host per cell;
{result.cells_measurable} of {len(result.cells)} cells measurable (at least {per_cell} injections).
Detected = calibrated probability &ge; {result.threshold:.4g}, the operating threshold
at FPR {result.operating_fpr:g} on the synthetic test split. Intervals: 95 % Wilson.</p>
{hosts}
<h2>Marginal completeness</h2>{marginals}
<h2>theta_E x source magnitude (pooled over PSF and depth)</h2>{img_tag(pngs['heatmap'], 'completeness, theta_E x source magnitude')}
<h2>Every cell</h2><table><tr>{head}</tr>{body}</table></body></html>"""
