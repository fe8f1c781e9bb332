"""The selection function: completeness of the production model at its operating threshold over a
grid of (theta_E, PSF FWHM, depth, source magnitude), by injection-recovery on Ray (DESIGN §8, §9).

Each cell gets ``injections_per_cell`` lenses, each in its own host (one injection per host, so the
counts are independent trials and the Wilson interval holds). Where the injections come from is a
seam: ``SimulatedInjections`` (the default) renders the embedded simulator's LRGs observed at the
cell's PSF and depth; injections into real cutouts, whose PSF and depth are measured rather than
imposed, plug in as another ``InjectionSource`` with bins of the hosts' values as its axes.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from halo_core import uris
from halo_core.data.stamps import PIXEL_SCALE_ARCSEC
from halo_core.evaluation.metrics import wilson_interval
from halo_core.ray_runtime import ray_session

AXES = ("theta_e_arcsec", "psf_fwhm_arcsec", "psfdepth_r_mag", "source_r_mag")
SELECTION_JSON = "selection_function.json"
SELECTION_HTML = "selection_function.html"


@dataclass(frozen=True)
class Cell:
    theta_e_arcsec: float
    psf_fwhm_arcsec: float
    psfdepth_r_mag: float
    source_r_mag: float


class InjectionSource(Protocol):
    def inject(self, cell: Cell, n: int, seed: tuple[int, ...]) -> np.ndarray:
        """(n, 3, 64, 64) g,r,z nanomaggies: n hosts, each with one lens of the cell's parameters."""


class SimulatedInjections:
    """The embedded simulator's hosts and lenses (halo_core.simulate), with the cell's theta_E and
    source magnitude imposed on the lens and its PSF and depth on the observation."""

    def inject(self, cell: Cell, n: int, seed: tuple[int, ...]) -> np.ndarray:
        from halo_core.simulate.catalog import mag_to_flux_nmgy
        from halo_core.simulate.dataset import PSF_FWHM_ARCSEC, SKY_SIGMA_NMGY, draw_split, render_chunk
        from halo_core.simulate.source import DEFAULT_OVERSAMPLE

        rng = np.random.default_rng(seed)
        lrg, inj = draw_split(rng, [("grid", 180.0, 0.0)], n, n, 1, 0)
        # PSF: the nominal g:r:z ratios scaled to the cell's r-band FWHM, with the simulator's 3 % jitter
        lrg["fwhm"] = PSF_FWHM_ARCSEC * (cell.psf_fwhm_arcsec / PSF_FWHM_ARCSEC[1]) * np.exp(rng.normal(0, 0.03, (n, 3)))
        # depth: the sky sigma that gives this 5-sigma point-source depth (the simulator's psfdepth_r,
        # inverted); g and z keep their nominal ratios to r
        sigma_psf_px = cell.psf_fwhm_arcsec / PIXEL_SCALE_ARCSEC / 2.3548
        sky_r = 10 ** ((22.5 - cell.psfdepth_r_mag) / 2.5) / (5.0 * np.sqrt(4.0 * np.pi) * sigma_psf_px)
        lrg["sky"] = np.tile(SKY_SIGMA_NMGY.mean(axis=1) / SKY_SIGMA_NMGY[1].mean() * sky_r, (n, 1))
        colours = inj["src_flux"] / inj["src_flux"][:, 1:2]  # the drawn g-r, r-z colours kept
        # the source offsets were drawn in units of the drawn theta_E: rescale them to the cell's
        scale = cell.theta_e_arcsec / inj["theta_e"]
        inj["src_x"], inj["src_y"] = inj["src_x"] * scale, inj["src_y"] * scale
        inj["theta_e"] = np.full(n, cell.theta_e_arcsec)
        inj["src_flux"] = colours * mag_to_flux_nmgy(np.full(n, cell.source_r_mag))[:, None]
        inj["masked"][:] = False
        inj["nan"][:] = False
        stamps = [render_chunk(rng, lrg, inj, idx, DEFAULT_OVERSAMPLE).stamps
                  for idx in np.array_split(np.arange(n), max(1, -(-n // 32)))]
        return np.concatenate(stamps)


def cells(cfg) -> list[Cell]:
    grid = cfg.selection_function
    return [Cell(*values) for values in itertools.product(*(getattr(grid, axis) for axis in AXES))]


def _score_cells(model, cell_list: list[Cell], n: int, seeds: list[tuple[int, int]], source: InjectionSource) -> list[dict]:
    """One Ray task: a group of cells rendered and scored with one loaded model."""
    import torch

    from halo_core.survey.scoring import ScoringModel

    torch.set_num_threads(1)
    scorer = ScoringModel.load(model.path, model.calibration, model.prevalence)
    out = []
    for cell, seed in zip(cell_list, seeds):
        probability = scorer.predict(source.inject(cell, n, seed))["probability"]
        detected = int((probability >= model.threshold).sum())
        low, high = wilson_interval(detected, n)
        out.append({**cell.__dict__, "n": n, "detected": detected, "completeness": detected / n,
                    "ci_low": low, "ci_high": high})
    return out


def _marginal(rows: list[dict], axis: str) -> list[dict]:
    out = []
    for value in sorted({r[axis] for r in rows}):
        n = sum(r["n"] for r in rows if r[axis] == value)
        k = sum(r["detected"] for r in rows if r[axis] == value)
        low, high = wilson_interval(k, n)
        out.append({"value": value, "n": n, "detected": k, "completeness": k / n, "ci_low": low, "ci_high": high})
    return out


def selection_function(cfg, model, *, source: InjectionSource | None = None, num_cpus: int | None = None) -> dict:
    """Completeness per cell and per axis of ``model`` (a CatalogModel) at its operating threshold."""
    import ray

    from halo_core.errors import CheckpointError

    if model.threshold is None:
        raise CheckpointError(f"{model.path}: its card has no measured threshold at FPR {model.operating_fpr:g} "
                              "(too few distinct test negatives); the selection function needs one")
    started = time.perf_counter()
    grid, source = cfg.selection_function, source or SimulatedInjections()
    all_cells = cells(cfg)
    seeds = [(grid.seed, i) for i in range(len(all_cells))]  # a cell's injections do not depend on the grouping
    with ray_session(num_cpus):
        task = ray.remote(num_cpus=1)(_score_cells)
        # one task per (PSF, depth) pair of cells: the model is loaded once per task, not per cell
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(all_cells):
            groups.setdefault((c.psf_fwhm_arcsec, c.psfdepth_r_mag), []).append(i)
        futures = [task.remote(model, [all_cells[i] for i in idx], grid.injections_per_cell, [seeds[i] for i in idx],
                               source) for idx in groups.values()]
        rows = [row for result in ray.get(futures) for row in result]
    rows.sort(key=lambda r: tuple(r[a] for a in AXES))
    return {
        "model_version": model.version, "operating_fpr": model.operating_fpr, "threshold": model.threshold,
        "injections": type(source).__name__, "axes": {a: list(getattr(grid, a)) for a in AXES},
        "injections_per_cell": grid.injections_per_cell, "n": sum(r["n"] for r in rows),
        "cells": rows, "marginals": {a: _marginal(rows, a) for a in AXES},
        "seconds": round(time.perf_counter() - started, 3),
    }


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plots(result: dict) -> dict[str, bytes]:
    """PNGs: the marginal completeness curves with their Wilson intervals, and the heat map of
    theta_E x source magnitude pooled over PSF and depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(AXES), figsize=(4 * len(AXES), 3.2), sharey=True)
    for ax, axis in zip(axes, AXES):
        m = result["marginals"][axis]
        x = [r["value"] for r in m]
        y = np.array([r["completeness"] for r in m])
        err = [y - [r["ci_low"] for r in m], [r["ci_high"] for r in m] - y]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3)
        ax.set(xlabel=axis, ylim=(0, 1.02))
    axes[0].set_ylabel(f"completeness at p >= {result['threshold']:.3g}")
    curves = _png(fig)

    theta, mags = result["axes"]["theta_e_arcsec"], result["axes"]["source_r_mag"]
    k = np.zeros((len(mags), len(theta)))
    n = np.zeros_like(k)
    for r in result["cells"]:
        i, j = mags.index(r["source_r_mag"]), theta.index(r["theta_e_arcsec"])
        k[i, j] += r["detected"]
        n[i, j] += r["n"]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    image = ax.imshow(k / n, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set(xticks=range(len(theta)), xticklabels=[f"{t:g}" for t in theta], xlabel="theta_E (arcsec)",
           yticks=range(len(mags)), yticklabels=[f"{m:g}" for m in mags], ylabel="source r mag")
    for (i, j), c in np.ndenumerate(k / n):
        ax.text(j, i, f"{c:.2f}\nn={int(n[i, j])}", ha="center", va="center", color="w" if c < 0.6 else "k", fontsize=8)
    fig.colorbar(image, ax=ax, label="completeness")
    return {"marginals": curves, "heatmap": _png(fig)}


def write_report(result: dict, out_dir: str) -> tuple[str, dict[str, bytes]]:
    """selection_function.json and a self-contained selection_function.html; (html URI, plots)."""
    pngs = plots(result)
    images = {name: base64.b64encode(png).decode() for name, png in pngs.items()}
    uris.atomic_write_json(uris.join(out_dir, SELECTION_JSON), result)
    head = "".join(f"<th>{h}</th>" for h in (*AXES, "n", "detected", "completeness", "95 % Wilson"))
    body = "".join(
        "<tr>" + "".join(f"<td>{r[a]:g}</td>" for a in AXES)
        + f"<td>{r['n']}</td><td>{r['detected']}</td><td>{r['completeness']:.2f}</td>"
        f"<td>[{r['ci_low']:.2f}, {r['ci_high']:.2f}]</td></tr>" for r in result["cells"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>halo selection function</title>
<style>body{{font-family:sans-serif;margin:1em}} td,th{{padding:2px 8px;text-align:right}}</style></head><body>
<h1>Selection function of model {html.escape(result['model_version'])}</h1>
<p>Injection-recovery ({html.escape(result['injections'])}): {result['n']} injections, {result['injections_per_cell']}
per cell, one per host. Detected = calibrated probability &ge; {result['threshold']:.4g}, the operating threshold
at FPR {result['operating_fpr']:g} on the synthetic test split. Intervals: 95 % Wilson.</p>
<h2>Marginal completeness</h2><img src="data:image/png;base64,{images['marginals']}">
<h2>theta_E x source magnitude (pooled over PSF and depth)</h2><img src="data:image/png;base64,{images['heatmap']}">
<h2>Every cell</h2><table><tr>{head}</tr>{body}</table></body></html>"""
    uri = uris.join(out_dir, SELECTION_HTML)
    uris.atomic_write_bytes(uri, page.encode())
    return uri, pngs
