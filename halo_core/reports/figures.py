"""The figures of every report (evaluation, validation, selection function, gallery), drawn from numbers
already computed: nothing here measures anything. One figure per image, at most MAX_PLOT_WIDTH_PX wide
(grids of stamps wrap). The only module that imports matplotlib."""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np

from halo_core.reports.markup import bin_label

DPI = 90
# One figure per image, at most this wide: it shows unscaled in report.html and in a narrow window.
MAX_PLOT_WIDTH_PX = 600
# A key plot on the Dagster asset page: the UI cannot size a markdown image, and its metadata value
# column is ~243 px wide in a 1,280-px window (beside the longest key, ece_after_other_calibration).
THUMBNAIL_WIDTH_PX = 220


def png(fig, width_px: float = 0, close: bool = True) -> bytes:
    """The figure as a PNG, drawn at ``width_px`` (a lower DPI: text and lines scale with it) or at DPI."""
    if fig.get_figwidth() * DPI > MAX_PLOT_WIDTH_PX:
        raise ValueError(f"a {fig.get_figwidth() * DPI:.0f}-px figure: a plot is one figure of at most "
                         f"{MAX_PLOT_WIDTH_PX} px")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=width_px / fig.get_figwidth() if width_px else DPI)
    if close:
        plt.close(fig)
    return buf.getvalue()


def columns(n_panels: int, panel_width_in: float) -> int:
    """As many panels in a row as MAX_PLOT_WIDTH_PX holds: a grid of stamps wraps instead of widening."""
    return max(1, min(n_panels, int(MAX_PLOT_WIDTH_PX // (panel_width_in * DPI))))


def panels(rows: int, cols: int, panel_inches: tuple[float, float]):
    """(fig, axes[rows][cols]) of image panels, every axis off."""
    fig, axes = plt.subplots(max(rows, 1), cols, figsize=(panel_inches[0] * cols, panel_inches[1] * max(rows, 1)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, title: str):
    """The measured ROC curve (sklearn's roc_curve points) on a log FPR axis."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(np.maximum(fpr, 1e-5), tpr, lw=1.5)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate (completeness)", title=title)
    ax.grid(alpha=0.3)
    return fig


def reliability_figure(curves: dict[str, tuple[float, list]], title: str = "reliability (test, equal-mass bins)"):
    """Observed lens fraction against mean predicted probability, per equal-mass bin, one curve per
    entry of ``curves`` ((ECE, its ReliabilityBins): a scaling on test, or a shift set)."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    for name, (ece, bins) in curves.items():
        ax.plot([b.mean_p for b in bins], [b.frac_pos for b in bins], "o-", ms=4, label=f"{name} (ECE {ece:.3f})")
    ax.set(xlabel="mean predicted probability", ylabel="fraction of lenses", title=title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def training_figures(history: list) -> dict:
    """Loss, val AUROC and learning rate per epoch (training.monitors.EpochRecord), one figure each."""
    epochs = [h.epoch + 1 for h in history]
    figures = {name: plt.subplots(figsize=(3.7, 3.2)) for name in ("training_loss", "training_auroc", "training_lr")}
    ax = figures["training_loss"][1]
    ax.plot(epochs, [h.train_loss for h in history], "o-", ms=3, label="train")
    ax.plot(epochs, [h.val_loss for h in history], "o-", ms=3, label="val")
    ax.set(xlabel="epoch", ylabel="BCE loss")
    ax.legend(fontsize=8)
    figures["training_auroc"][1].plot(epochs, [h.val_auroc for h in history], "o-", ms=3)
    figures["training_auroc"][1].set(xlabel="epoch", ylabel="val AUROC")
    figures["training_lr"][1].plot(epochs, [h.lr for h in history], "o-", ms=3)
    figures["training_lr"][1].set(xlabel="epoch", ylabel="learning rate", yscale="log")
    for _, ax in figures.values():
        ax.grid(alpha=0.3)
    return {name: fig for name, (fig, _) in figures.items()}


def confusion_png(confusion: dict) -> bytes:
    counts = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(counts, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", color="black" if n < counts.max() / 2 else "white")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["non-lens", "lens"], yticklabels=["non-lens", "lens"],
           xlabel="predicted", ylabel="true", title=f"confusion at p >= {confusion['threshold']:g}")
    return png(fig)


def completeness_figure(rows: list, quantity: str):
    """Completeness per DetectionBin of one quantity, with its Wilson 95 % interval as the error bar."""
    fig, ax = plt.subplots(figsize=(3.7, 3.2))
    rows = [r for r in rows if r.n]
    x = np.arange(len(rows))
    c = np.array([r.completeness for r in rows], dtype=float)
    lo, hi = np.array([r.ci95 for r in rows], dtype=float).reshape(-1, 2).T
    ax.errorbar(x, c, yerr=[c - lo, hi - c], fmt="o", capsize=3)
    ax.set_xticks(x, [f"{bin_label(r.lo, r.hi)}\nn={r.n}" for r in rows], fontsize=7)
    ax.set(ylim=(0, 1.05), xlabel=quantity, ylabel="completeness at p >= 0.5")
    ax.grid(alpha=0.3)
    return fig


def asinh_rgb(stamp: np.ndarray) -> np.ndarray:
    """(3, H, W) g,r,z -> (H, W, 3) RGB in [0, 1]: z red, g blue, one asinh stretch for all bands so
    colours survive; the stamps are already in sky-noise units, so a softening of 3 sigma is fine."""
    x = np.arcsinh(stamp[::-1].astype(np.float32) / 3.0).transpose(1, 2, 0)
    lo, hi = np.percentile(x, [1.0, 99.5])
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)


def gallery_png(groups: list[list[tuple[np.ndarray, str]]]) -> bytes:
    """(stamp, title) panels; each group starts a row and wraps at the width limit."""
    panel = (1.5, 1.9)
    cols = columns(max([len(g) for g in groups] + [1]), panel[0])
    group_rows = [max(1, math.ceil(len(g) / cols)) for g in groups]
    fig, axes = panels(sum(group_rows), cols, panel)
    for first, group in zip(np.cumsum([0, *group_rows]), groups):
        for k, (stamp, title) in enumerate(group):
            ax = axes[first + k // cols, k % cols]
            ax.imshow(asinh_rgb(stamp), origin="lower", interpolation="nearest")  # blocky pixels compress 3x
            ax.set_title(title, fontsize=6)
    return png(fig)


def saliency_png(figure: dict, core_radius_px: float) -> bytes:
    """Mean gradient x input saliency of the test lenses per theta_E bin; the contour is the arc footprint
    (where at least half the bin's lenses have arc light), the dashed circle the core (``core_radius_px``)."""
    n = len(figure["mean_maps"])
    cols = columns(n, 2.2)
    fig, axes = panels(math.ceil(n / cols), cols, (2.2, 2.4))
    for ax, (lo, hi), sal, arc in zip(axes.flat, figure["edges"], figure["mean_maps"], figure["mean_arcs"]):
        ax.imshow(sal, origin="lower", cmap="magma", interpolation="nearest")
        ax.contour(arc, levels=[0.5], colors="cyan", linewidths=0.8)
        c = (sal.shape[0] - 1) / 2
        ax.add_patch(plt.Circle((c, c), core_radius_px, fill=False, color="white", ls="--", lw=0.8))
        ax.set_title(f"theta_E {bin_label(lo, hi)}\"", fontsize=8)
    return png(fig)


def shift_reliability_png(sets: dict) -> bytes:
    """Reliability of the calibrated probabilities on each ShiftSet (equal-mass bins)."""
    return png(reliability_figure({name: (d.ece_calibrated, d.reliability) for name, d in sets.items()},
                                  "reliability under shift (calibrated)"))


def selection_marginal_figure(result, axis: str):
    """Completeness along one axis of a selection function (survey.selection.SelectionFunction) with its
    Wilson intervals; a point that is not measurable is a grey cross; each point carries its n."""
    fig, ax = plt.subplots(figsize=(4, 3.2))
    m = [r for r in result.marginals[axis] if r.n]
    for measurable, style in ((True, {"marker": "o"}), (False, {"marker": "x", "color": "grey", "ls": "none"})):
        part = [r for r in m if r.measurable == measurable]
        y = np.array([r.completeness for r in part])
        err = [y - [r.ci_low for r in part], [r.ci_high for r in part] - y]
        ax.errorbar([r.value for r in part], y, yerr=err, capsize=3, **style)
    for r in m:
        ax.annotate(f"n={r.n}", (r.value, r.completeness), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set(xlabel=axis, ylim=(0, 1.02), ylabel=f"completeness at p >= {result.threshold:.3g}")
    return fig


def selection_heatmap_figure(pooled):
    """Completeness over theta_E x source magnitude (survey.selection.PooledCompleteness); a cell not
    measurable reads so on grey, each with its n."""
    theta, mags, n = pooled.theta_e_arcsec, pooled.source_r_mag, pooled.n
    completeness, measurable = pooled.completeness, pooled.measurable
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    image = ax.imshow(completeness, origin="lower", vmin=0, vmax=1, cmap=plt.get_cmap("viridis").with_extremes(
        bad="lightgrey"), aspect="auto")
    ax.set(xticks=range(len(theta)), xticklabels=[f"{t:g}" for t in theta], xlabel="theta_E (arcsec)",
           yticks=range(len(mags)), yticklabels=[f"{m:g}" for m in mags], ylabel="source r mag")
    for (i, j), c in np.ndenumerate(completeness):
        label = f"{c:.2f}" if measurable[i, j] else "not\nmeasurable"
        ax.text(j, i, f"{label}\nn={int(n[i, j])}", ha="center", va="center",
                color="w" if measurable[i, j] and c < 0.6 else "k", fontsize=8)
    fig.colorbar(image, ax=ax, label="completeness")
    return fig


def score_histogram_figure(lens: np.ndarray, non: np.ndarray, thresholds: list, standin: bool):
    """Calibrated probabilities of real lenses and (stand-in) non-lenses on a log scale, with the synthetic
    operating thresholds (dashed: the operating one)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    bins = np.linspace(0, 1, 26)
    ax.hist(non, bins=bins, alpha=0.6, label=f"{'stand-in ' if standin else ''}non-lenses (n={len(non)})")
    ax.hist(lens, bins=bins, alpha=0.6, label=f"real lenses (n={len(lens)})")
    for t in thresholds:
        if t.measurable:
            ax.axvline(t.threshold, ls="--" if t.operating else ":", color="k", lw=1)
            ax.text(t.threshold, ax.get_ylim()[1] * 0.9, f" FPR {t.fpr:g}", fontsize=7)
    ax.set(xlabel="calibrated lens probability", ylabel="galaxies", yscale="log", title="real-galaxy scores")
    ax.legend(fontsize=7)
    return fig


def stamp_data_uri(rgb: np.ndarray, zoom: int) -> str:
    """An (H, W, 3) image in [0, 1] as a PNG data URI, each pixel drawn as a zoom x zoom block."""
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, np.kron(rgb, np.ones((zoom, zoom, 1))), format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
