"""The plan's diagnostics on held-out scores: masked arcs, per-brick AUROC, theta_E bins (DESIGN §5)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from halo_core.metrics import auroc, wilson_interval

THETA_E_BINS_ARCSEC = (0.0, 0.75, 1.0, 1.5, 2.0, 3.0)


def arc_snr_zero_behaviour(probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Stamps whose arc was masked (arc_snr == 0) are controls in disguise: the fraction scored as lens."""
    n = int(len(probs))
    k = int((probs >= threshold).sum())
    lo, hi = wilson_interval(k, n)
    return {"n": n, "accuracy_as_lens": k / n if n else None, "ci95": [lo, hi]}


def per_brick_auroc(meta: pd.DataFrame, labels: np.ndarray, probs: np.ndarray, min_per_class: int = 5) -> dict:
    """AUROC per brick with at least ``min_per_class`` positives and negatives; std and the worst bricks."""
    frame = pd.DataFrame({"brick": meta["brickname"].to_numpy(), "y": labels, "p": probs})
    rows = []
    for brick, g in frame.groupby("brick"):
        n_pos, n_neg = int(g.y.sum()), int((g.y == 0).sum())
        if min(n_pos, n_neg) >= min_per_class:
            rows.append({"brick": brick, "n_pos": n_pos, "n_neg": n_neg, "auroc": auroc(g.y.to_numpy(), g.p.to_numpy())})
    values = np.array([r["auroc"] for r in rows])
    return {
        "min_per_class": min_per_class, "n_bricks": len(rows), "n_bricks_total": int(frame.brick.nunique()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        "worst": sorted(rows, key=lambda r: r["auroc"])[:5],
    }


def binned_completeness(values: np.ndarray, probs: np.ndarray, edges, threshold: float = 0.5) -> list[dict]:
    """Completeness (recall) of positives at ``threshold`` in bins of ``values``, with Wilson 95 % intervals."""
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (values >= lo) & (values < hi)
        n, k = int(in_bin.sum()), int((probs[in_bin] >= threshold).sum())
        ci = wilson_interval(k, n)
        out.append({"lo": lo, "hi": hi, "n": n, "completeness": k / n if n else None, "ci95": list(ci)})
    return out
