"""Classification metrics of a lens finder (DESIGN §5): always with the sample counts behind them."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

FPR_POINTS = (1e-2, 1e-3, 1e-4)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present (never a made-up 0.5)."""
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else math.nan


def precision_at_recall(labels, scores, recall: float) -> float:
    """Best precision among thresholds whose recall is at least ``recall``."""
    p, r, _ = precision_recall_curve(labels, scores)
    return float(p[r >= recall].max())


def recall_at_precision(labels, scores, precision: float) -> float:
    """Best recall among thresholds whose precision is at least ``precision`` (0 if none reaches it)."""
    p, r, _ = precision_recall_curve(labels, scores)
    ok = p >= precision
    return float(r[ok].max()) if ok.any() else 0.0


def tpr_at_fpr(labels, scores, fpr: float) -> dict:
    """TPR at a false-positive rate, or ``measurable: False`` when fewer than 1/fpr negatives exist:
    with n negatives the smallest non-zero FPR is 1/n, so anything below that is extrapolation."""
    n_neg = int((labels == 0).sum())
    if n_neg < math.ceil(1 / fpr):
        return {"fpr": fpr, "tpr": None, "n_negatives": n_neg, "measurable": False}
    f, t, _ = roc_curve(labels, scores)
    return {"fpr": fpr, "tpr": float(t[f <= fpr].max()), "n_negatives": n_neg, "measurable": True}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion; honest at small n and near 0 or 1."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    """The plan's metrics on probabilities ``scores`` (DESIGN §5), with counts."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    two_classes = len(np.unique(labels)) == 2
    return {
        "n": int(len(labels)),
        "n_positives": int(labels.sum()),
        "n_negatives": int((labels == 0).sum()),
        "auroc": auroc(labels, scores),
        "auprc": float(average_precision_score(labels, scores)) if two_classes else math.nan,
        "accuracy": float(((scores >= threshold) == labels).mean()),
        "precision_at_recall_0_95": precision_at_recall(labels, scores, 0.95) if two_classes else math.nan,
        "precision_at_recall_0_90": precision_at_recall(labels, scores, 0.90) if two_classes else math.nan,
        "recall_at_precision_0_95": recall_at_precision(labels, scores, 0.95) if two_classes else math.nan,
        "tpr_at_fpr": [tpr_at_fpr(labels, scores, f) for f in FPR_POINTS] if two_classes else [],
    }
