"""Shortcut gates (DESIGN §1 facts 3-4, §5): can a linear model separate lenses from non-lenses using
only a feature that is not the arc? Cross-validated logistic-regression AUCs on the *model's input
representation* (after preprocessing, with the configured sample construction):

- core:     the central 10x10 pixels of every input channel (arc flux leaking into the PSF core);
- radial:   the azimuthal-median radial profile of every channel (1-px rings): the round part of
            the light, where flux an injection adds to the PSF core shows up. The median, not
            the mean: an arc covers a minority of its ring, so a ring mean measures the arc
            itself (measured on demo data, residual + unpaired: mean-profile AUC 0.91 rising to
            0.97 for theta_E > 2", i.e. the signal, not a shortcut);
- metadata: PSF, depth, extinction and masked fractions (how the two classes were selected).

An AUC near 0.5 means the feature carries no label; above ``gates.max_auc`` the gate fails.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from halo_core.diagnostics import THETA_E_BINS_ARCSEC
from halo_core.loader import gather
from halo_core.metrics import auroc
from halo_core.preprocess import ring_index
from halo_core.samples import SampleSet, build_samples
from halo_core.shards import open_split
from halo_core.splits import lrg_ids
from halo_core.train import check_dataset

CORE_PX = 10
METADATA_COLUMNS = ("psfsize_r", "psf_fwhm_used_g", "psf_fwhm_used_r", "psf_fwhm_used_z", "psfdepth_r", "ebv",
                    "bad_pixel_frac", "wise_brightmask_frac")
GATES = ("core", "radial", "metadata")


@dataclass
class GateResult:
    gate: str
    auc: float  # NaN when the gate has no features (e.g. no metadata columns)
    n: int
    n_features: int
    threshold: float
    strata: list[dict]

    @property
    def passed(self) -> bool:
        return math.isnan(self.auc) or self.auc <= self.threshold

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def core_features(x: np.ndarray) -> np.ndarray:
    """(n, C, H, W) -> (n, C*100): the central 10x10 pixels of every channel."""
    lo = (x.shape[-1] - CORE_PX) // 2
    return x[:, :, lo:lo + CORE_PX, lo:lo + CORE_PX].reshape(len(x), -1)


def radial_features(x: np.ndarray) -> np.ndarray:
    """(n, C, H, W) -> (n, C*R): median of each 1-px ring inside the inscribed circle, per channel."""
    rings = ring_index(x.shape[-1])
    flat = x.reshape(*x.shape[:2], -1)
    profile = [np.median(flat[..., rings == r], axis=-1) for r in range(x.shape[-1] // 2)]
    return np.stack(profile, axis=-1).reshape(len(x), -1)


def metadata_features(meta: pd.DataFrame) -> np.ndarray:
    # a column with no value at all (real cutouts without depth or extinction metadata) carries nothing
    cols = [c for c in METADATA_COLUMNS if c in meta.columns and meta[c].notna().any()]
    values = meta[cols].to_numpy(dtype=float) if cols else np.empty((len(meta), 0))
    fill = np.nanmedian(values, axis=0) if cols else []
    return np.where(np.isnan(values), fill, values)


def _balanced_subset(samples: SampleSet, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    per_class = n // 2
    picks = [rng.permutation(np.flatnonzero(samples.labels == c))[:per_class] for c in (0, 1)]
    return np.sort(np.concatenate(picks))


def cross_validated_scores(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int,
                           seed: int) -> np.ndarray:
    """Out-of-fold probabilities of a standardised logistic regression. Folds are disjoint by LRG:
    the controls of one LRG are identical images, and a probe that saw one in training would
    recognise its copies (measured: unpaired core AUC 0.75 with plain folds, 0.58 grouped, on demo data)."""
    scores = np.empty(len(labels))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(features, labels, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(features[train], labels[train])
        scores[test] = model.predict_proba(features[test])[:, 1]
    return scores


def _strata(meta: pd.DataFrame, labels: np.ndarray, scores: np.ndarray) -> list[dict]:
    """AUC per theta_E bin (that bin's lenses against all non-lenses) and per PSF tercile (both classes)."""
    rows = []
    theta = meta["theta_e_arcsec"].to_numpy(dtype=float)
    neg = labels == 0
    for lo, hi in zip(THETA_E_BINS_ARCSEC[:-1], THETA_E_BINS_ARCSEC[1:]):
        pos = (labels == 1) & (theta >= lo) & (theta < hi)
        keep = pos | neg
        rows.append({"stratum": f"theta_e {lo:g}-{hi:g}\"", "n_pos": int(pos.sum()), "n_neg": int(neg.sum()),
                     "auc": auroc(labels[keep], scores[keep]) if pos.any() else math.nan})
    if "psfsize_r" in meta.columns:
        psf = meta["psfsize_r"].to_numpy(dtype=float)
        edges = np.nanquantile(psf, [0, 1 / 3, 2 / 3, 1])
        for lo, hi in zip(edges[:-1], edges[1:]):
            keep = (psf >= lo) & (psf <= hi)
            rows.append({"stratum": f"psf_r {lo:.2f}-{hi:.2f}\"", "n_pos": int(labels[keep].sum()),
                         "n_neg": int((labels[keep] == 0).sum()), "auc": auroc(labels[keep], scores[keep])})
    return rows


def shortcut_gates(cfg, dataset_dir: str, split: str = "train") -> dict[str, GateResult]:
    """The three gates on ``split`` with the configured sample construction and preprocessing."""
    check_dataset(cfg, dataset_dir)
    shards = open_split(dataset_dir, split)
    samples = build_samples(shards.meta, cfg.sample_construction, cfg.seed)
    chosen = _balanced_subset(samples, cfg.gates.n_samples, cfg.seed)
    subset = SampleSet(samples.rows[chosen], samples.slots[chosen], samples.labels[chosen], samples.with_control)
    x = gather(shards, subset, np.arange(len(subset)))
    labels = subset.labels.astype(int)
    meta = shards.meta.iloc[subset.rows].reset_index(drop=True)
    features = {"core": core_features(x), "radial": radial_features(x), "metadata": metadata_features(meta)}
    results = {}
    for gate, f in features.items():
        if f.shape[1] == 0 or min(np.bincount(labels, minlength=2)) < cfg.gates.folds:
            results[gate] = GateResult(gate, math.nan, len(labels), f.shape[1], cfg.gates.max_auc, [])
            continue
        scores = cross_validated_scores(f, labels, lrg_ids(meta).to_numpy(), cfg.gates.folds, cfg.seed)
        results[gate] = GateResult(gate, auroc(labels, scores), len(labels), f.shape[1], cfg.gates.max_auc,
                                   _strata(meta, labels, scores))
    return results
