"""Classification metrics of a lens finder (docs/design.md §5 (verdict)): always with the sample counts behind them."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

FPR_POINTS = (1e-2, 1e-3, 1e-4)
# The TPR (and its threshold) at the config's `operating_fpr`, under one name whatever its value; the FPR
# travels beside them as "operating_fpr".
OPERATING_TPR = "tpr_at_operating_fpr"
OPERATING_THRESHOLD = "threshold_at_operating_fpr"
# Their names while the operating point was fixed at 1e-2: reports and cards written then are still read.
LEGACY_OPERATING_KEYS = {"tpr_at_fpr_1e-2": OPERATING_TPR, "threshold_at_fpr_1e-2": OPERATING_THRESHOLD,
                         "tpr_at_fpr_0.01": OPERATING_TPR}
LEGACY_OPERATING_FPR = 1e-2


def current_spelling(value):
    """``value`` (a stored report section: dicts and lists) with the legacy operating-point names renamed."""
    if isinstance(value, list):
        return [current_spelling(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {LEGACY_OPERATING_KEYS.get(k, k): current_spelling(v) for k, v in value.items()}


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


def tpr_at_fpr(labels, scores, fpr: float, n_distinct_negatives: int | None = None) -> dict:
    """TPR at a false-positive rate and the score threshold that gives it, or ``measurable: False``
    when fewer than 1/fpr distinct negatives exist: with n negatives the smallest non-zero FPR is 1/n,
    so anything below that is extrapolation. Controls repeat when several injections share one LRG
    and a repeated control moves as one, so pass the number of distinct negatives when it is lower."""
    n_neg = int((labels == 0).sum())
    n_distinct = n_neg if n_distinct_negatives is None else n_distinct_negatives
    point = {"fpr": fpr, "n_negatives": n_neg, "n_distinct_negatives": n_distinct}
    if n_distinct < math.ceil(1 / fpr):
        return {**point, "tpr": None, "threshold": None, "measurable": False}
    f, t, thresholds = roc_curve(labels, scores)
    best = np.flatnonzero(f <= fpr)[np.argmax(t[f <= fpr])]
    return {**point, "tpr": float(t[best]), "threshold": float(thresholds[best]), "measurable": True}


def precision_at_prevalence(tpr: float, fpr: float, prevalence: float) -> float:
    """Expected purity of a candidate list when a fraction ``prevalence`` of the galaxies are lenses:
    TPR*pi / (TPR*pi + FPR*(1 - pi)). At pi = 1e-3 this needs FPR <= 1e-4 for purity >= 50 %."""
    found = tpr * prevalence
    false = fpr * (1 - prevalence)
    return found / (found + false) if found + false > 0 else math.nan


def operating_points(labels, scores, prevalence: float, n_distinct_negatives: int | None = None) -> list[dict]:
    """TPR at each of FPR_POINTS with the expected precision at ``prevalence``. The nominal FPR is
    used, an upper bound on the FPR measured at that threshold, so a lucky zero-false-positive count
    on a finite test set cannot inflate the precision; ``None`` where the TPR is not measurable."""
    out = []
    for fpr in FPR_POINTS:
        point = tpr_at_fpr(labels, scores, fpr, n_distinct_negatives)
        precision = precision_at_prevalence(point["tpr"], fpr, prevalence) if point["measurable"] else None
        out.append({**point, "prevalence": prevalence, "precision_at_prevalence": precision})
    return out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion; honest at small n and near 0 or 1."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at p = 0 or 1 the exact bound equals p; rounding could put it on the wrong side
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


# the go/no-go table's own target (docs/design.md §5 (verdict)), computed whether or not `metrics` lists it
TARGET_METRIC = "precision@0.90"


def named_metric(name: str, labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """One of the config's `metrics` names (halo_core.config.RATE_AT says how `precision@R` and
    `recall@P` read); NaN where one class is missing."""
    if len(np.unique(labels)) < 2 and name != "accuracy":
        return math.nan
    if name == "auroc":
        return auroc(labels, scores)
    if name == "auprc":
        return float(average_precision_score(labels, scores))
    if name == "accuracy":
        return float(((scores >= threshold) == labels).mean())
    rate, _, level = name.partition("@")
    return (precision_at_recall if rate == "precision" else recall_at_precision)(labels, scores, float(level))


def classification_metrics(labels: np.ndarray, scores: np.ndarray, *, prevalence: float,
                           n_distinct_negatives: int | None = None, threshold: float = 0.5,
                           names: tuple[str, ...] = ("auroc", "auprc", "accuracy")) -> dict:
    """The configured metrics ``names`` on probabilities ``scores`` (docs/design.md §5 (verdict)), with counts, plus the
    go/no-go's AUROC and precision@0.90; the TPR-at-FPR rows carry the expected precision at the
    deployment ``prevalence``."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    two_classes = len(np.unique(labels)) == 2
    called = scores >= threshold  # "lens" at the threshold
    return {
        "n": int(len(labels)),
        "n_positives": int(labels.sum()),
        "n_negatives": int((labels == 0).sum()),
        "n_distinct_negatives": n_distinct_negatives,  # distinct non-lens galaxies: what a low FPR rests on
        **{name: named_metric(name, labels, scores, threshold) for name in dict.fromkeys(("auroc", *names, TARGET_METRIC))},
        "tpr_at_fpr": operating_points(labels, scores, prevalence, n_distinct_negatives) if two_classes else [],
        "confusion_at_threshold": {
            "threshold": threshold, "tp": int((called & (labels == 1)).sum()), "fn": int((~called & (labels == 1)).sum()),
            "fp": int((called & (labels == 0)).sum()), "tn": int((~called & (labels == 0)).sum()),
        },
    }


def per_class_accuracy(labels: np.ndarray, logits: np.ndarray) -> dict:
    """Accuracy of each class at logit 0 (p = 0.5); a class at 100 % on val means the model separates
    it perfectly, which for this task signals a shortcut rather than a lens finder."""
    labels = np.asarray(labels).astype(int)
    called = np.asarray(logits) >= 0
    out = {}
    for name, cls in (("non_lens", 0), ("lens", 1)):
        sel = labels == cls
        out[name] = {"n": int(sel.sum()), "accuracy": float((called[sel] == cls).mean()) if sel.any() else None}
    out["passed"] = all(v["accuracy"] is not None and v["accuracy"] < 1.0 for v in out.values())
    return out
