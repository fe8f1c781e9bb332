"""How labelled samples are built from (stamp, control) pairs: the seed plan's open question Q5.

A sample is (row, slot): slot 0 is the row's stamp (arc injected), slot 1 its control. A 6-channel
sample also carries the row's control as channels 3-5.

- ``paired_6ch``   (stamp, ctrl) -> 1 and (ctrl, ctrl) -> 0: the plan's 6-channel input made learnable.
- ``ctrl_negative`` stamp -> 1, its own control -> 0 (the plan's option B).
- ``unpaired``     LRGs split in two halves by a hash of their position: stamps of one half -> 1,
                   controls of the other half -> 0, so no galaxy appears in both classes; both
                   classes are matched in (psf_bin, depth_bin) cells where those columns exist, so
                   observing conditions cannot tell them apart.

Rows with ``arc_snr == 0`` (the arc was masked) never become positives: their stamp equals the control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from halo_core.data.shards import SplitShards, open_split
from halo_core.data.splits import lrg_ids
from halo_core.errors import ContractError

STAMP, CONTROL = 0, 1
MATCH_COLUMNS = ("psf_bin", "depth_bin")


@dataclass
class SampleSet:
    rows: np.ndarray  # (M,) int64 row in the split's shards
    slots: np.ndarray  # (M,) int8, STAMP or CONTROL
    labels: np.ndarray  # (M,) float32, 1 = lens
    with_control: bool  # 6-channel samples: append the row's control

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def counts(self) -> dict[str, int]:
        n_pos = int(self.labels.sum())
        return {"positives": n_pos, "negatives": len(self) - n_pos}


def lrg_half(meta: pd.DataFrame, seed: int) -> np.ndarray:
    """0 or 1 per row, the same for every injection on one LRG, stable across runs and machines."""
    keys = lrg_ids(meta).radd(f"{seed}:")
    return (pd.util.hash_pandas_object(keys, index=False).to_numpy() & 1).astype(np.int8)


def match_cells(meta: pd.DataFrame, pos: np.ndarray, neg: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal numbers of positives and negatives in every (psf_bin, depth_bin) cell (random, seeded)."""
    if not all(c in meta.columns for c in MATCH_COLUMNS):
        return pos, neg
    rng = np.random.default_rng(seed)
    cells = pd.MultiIndex.from_frame(meta[list(MATCH_COLUMNS)].fillna(-1)).codes
    cell = np.ravel_multi_index(cells, [len(c) + 1 for c in cells])
    keep_pos, keep_neg = [], []
    for c in np.unique(cell[np.concatenate([pos, neg])]):
        p, n = pos[cell[pos] == c], neg[cell[neg] == c]
        k = min(len(p), len(n))
        keep_pos.append(np.sort(rng.permutation(p)[:k]))
        keep_neg.append(np.sort(rng.permutation(n)[:k]))
    return np.concatenate(keep_pos), np.concatenate(keep_neg)


def build_samples(meta: pd.DataFrame, construction: str, seed: int) -> SampleSet:
    n = len(meta)
    rows = np.arange(n)
    arc = meta["arc_snr"].to_numpy(dtype=float) > 0  # NaN (no injection) and 0 (masked) are not arcs
    # galaxies a person graded "not a lens" (halo_core.survey.grades): always negatives, never matched away
    graded = (meta["graded_negative"].fillna(False).to_numpy(bool) if "graded_negative" in meta
              else np.zeros(n, bool))
    if construction in ("paired_6ch", "ctrl_negative"):
        pos = neg = rows[arc]
    elif construction == "unpaired":
        half = lrg_half(meta, seed)
        pos, neg = match_cells(meta, rows[arc & (half == 0)], rows[(half == 1) & ~graded], seed)
    else:
        raise ContractError(f"sample_construction {construction!r}: want paired_6ch, ctrl_negative or unpaired")
    neg = np.concatenate([neg, rows[graded]])
    return SampleSet(
        rows=np.concatenate([pos, neg]).astype(np.int64),
        slots=np.concatenate([np.full(len(pos), STAMP), np.full(len(neg), CONTROL)]).astype(np.int8),
        labels=np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32),
        with_control=construction == "paired_6ch",
    )


def balanced_subset(samples: SampleSet, n: int, seed: int) -> np.ndarray:
    """Sorted indices of up to n // 2 samples of each class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(samples.labels == c))[:n // 2] for c in (0, 1)]
    return np.sort(np.concatenate(picks))


def load_split_samples(cfg, dataset_dir: str, split: str) -> tuple[SplitShards, SampleSet]:
    """A split's shards and the samples ``cfg.sample_construction`` builds from them."""
    shards = open_split(dataset_dir, split)
    return shards, build_samples(shards.meta, cfg.sample_construction, cfg.seed)
