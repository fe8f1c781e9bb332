"""The plan's diagnostics on held-out scores: masked arcs, per-brick AUROC, completeness and AUROC
in bins of theta_E, PSF FWHM and arc SNR, and whether completeness rises with theta_E (docs/design.md §5 (verdict))."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from halo_core.evaluation.results import (
    BrickAuroc,
    CompletenessTrend,
    DetectionBin,
    MaskedArcs,
    PerBrickAuroc,
    TrendViolation,
)
from halo_core.metrics import auroc, wilson_interval

THETA_E_BINS_ARCSEC = (0.0, 0.75, 1.0, 1.5, 2.0, 3.0)
PSF_FWHM_BINS_ARCSEC = (0.0, 1.2, 1.35, 1.5, math.inf)  # DR10 r-band seeing; the simulator's psf_bin edges
ARC_SNR_BINS = (0.0, 3.0, 5.0, 10.0, 20.0, math.inf)  # max-pixel SNR: below ~5 an arc is barely visible


def arc_snr_zero_behaviour(probs: np.ndarray, threshold: float = 0.5) -> MaskedArcs:
    """Stamps whose arc was masked (arc_snr == 0) are controls in disguise: the fraction scored as lens."""
    n = int(len(probs))
    k = int((probs >= threshold).sum())
    lo, hi = wilson_interval(k, n)
    return MaskedArcs(n, k / n if n else None, [lo, hi])


def per_brick_auroc(meta: pd.DataFrame, labels: np.ndarray, probs: np.ndarray, min_per_class: int = 5) -> PerBrickAuroc:
    """AUROC per brick with at least ``min_per_class`` positives and negatives; std and the worst bricks."""
    frame = pd.DataFrame({"brick": meta["brickname"].to_numpy(), "y": labels, "p": probs})
    rows = []
    for brick, g in frame.groupby("brick"):
        n_pos, n_neg = int(g.y.sum()), int((g.y == 0).sum())
        if min(n_pos, n_neg) >= min_per_class:
            rows.append(BrickAuroc(brick, n_pos, n_neg, auroc(g.y.to_numpy(), g.p.to_numpy())))
    values = np.array([r.auroc for r in rows])
    return PerBrickAuroc(min_per_class, len(rows), int(frame.brick.nunique()),
                         float(values.std(ddof=1)) if len(values) > 1 else None,
                         sorted(rows, key=lambda r: r.auroc)[:5])


def binned_detection(pos_values: np.ndarray, pos_probs: np.ndarray, neg_probs: np.ndarray, edges,
                     neg_values: np.ndarray | None = None, threshold: float = 0.5) -> list[DetectionBin]:
    """Per bin of ``pos_values``: completeness of the lenses at ``threshold`` (Wilson 95 %) and the
    AUROC of that bin's lenses against the non-lenses. Negatives have no theta_E or arc SNR, so by
    default every bin is scored against all of them; pass ``neg_values`` (e.g. PSF FWHM, which
    controls do have) to compare like with like. The last bin is open when its edge is inf."""
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (pos_values >= lo) & (pos_values < hi)
        neg = neg_probs if neg_values is None else neg_probs[(neg_values >= lo) & (neg_values < hi)]
        n, k = int(in_bin.sum()), int((pos_probs[in_bin] >= threshold).sum())
        labels = np.r_[np.ones(n), np.zeros(len(neg))]
        out.append(DetectionBin(lo, hi, n, k / n if n else None, list(wilson_interval(k, n)), int(len(neg)),
                                auroc(labels, np.r_[pos_probs[in_bin], neg])))
    return out


def completeness_trend(bins: list[DetectionBin]) -> CompletenessTrend:
    """Completeness should not fall as theta_E grows (bigger arcs are easier). A later bin lower than
    an earlier one is a violation only when their Wilson intervals are disjoint, i.e. beyond noise."""
    measured = [b for b in bins if b.n]
    violations = [
        TrendViolation(f"{a.lo:g}-{a.hi:g}", f"{b.lo:g}-{b.hi:g}", [a.completeness, b.completeness], [a.ci95, b.ci95])
        for i, a in enumerate(measured) for b in measured[i + 1:] if b.ci95[1] < a.ci95[0]
    ]
    return CompletenessTrend(len(measured), len(measured) >= 2, violations)
