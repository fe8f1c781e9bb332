"""The plan's Q7, by measurement: what does a model that reads a control stamp get on a real galaxy?

A real survey galaxy has no arc-free control. The two candidates for channels 3-5 are the galaxy's
own image duplicated, or a median LRG template (the per-pixel median of the train split's controls,
preprocessed). The test split is scored with each in place of the true control; the AUROCs say what
a deployment of a 6-channel model would actually get.
"""

from __future__ import annotations

import numpy as np

from halo_core.data.samples import CONTROL, SampleSet
from halo_core.data.shards import SplitShards
from halo_core.metrics import auroc
from halo_core.model.engine import Engine

SUBSTITUTES = ("true_control", "duplicated_image", "median_template")
TEMPLATE_ROWS = 2000  # train controls in the median: a smooth template at the cost of a few MB


def median_template(train: SplitShards, seed: int = 0) -> np.ndarray:
    """(3, 64, 64) per-pixel median of (up to TEMPLATE_ROWS distinct) preprocessed train controls."""
    rows = np.arange(len(train))
    if len(rows) > TEMPLATE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, TEMPLATE_ROWS, replace=False))
    return np.median(np.asarray(train.pairs[rows, CONTROL], np.float32), axis=0)


def substitute_scores(engine: Engine, shards: SplitShards, samples: SampleSet,
                      template: np.ndarray) -> dict[str, np.ndarray]:
    """Logits of every 6-channel sample with each substitute as channels 3-5 (no augmentation)."""
    out = {name: np.empty(len(samples), np.float64) for name in SUBSTITUTES}
    for start in range(0, len(samples), engine.batch_size):
        idx = slice(start, start + engine.batch_size)
        rows, slots = samples.rows[idx], samples.slots[idx]
        first = np.asarray(shards.pairs[rows, slots], np.float32)
        seconds = {"true_control": np.asarray(shards.pairs[rows, CONTROL], np.float32), "duplicated_image": first,
                   "median_template": np.broadcast_to(template, first.shape)}
        for name, second in seconds.items():
            out[name][idx] = engine.logits(np.concatenate([first, second], axis=1))
    return out


def control_substitutes(engine: Engine, shards: SplitShards, samples: SampleSet, train: SplitShards,
                        seed: int = 0) -> dict:
    """Test AUROC with the true control, the image duplicated, and the median train template."""
    logits = substitute_scores(engine, shards, samples, median_template(train, seed))
    labels = samples.labels.astype(int)
    return {"n": len(labels), "n_positives": int(labels.sum()), "template_rows": min(len(train), TEMPLATE_ROWS),
            "auroc": {name: auroc(labels, s) for name, s in logits.items()}}
