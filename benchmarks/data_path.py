"""Data path throughput: filtered shards -> augmented, normalised batch tensors, per CPU core.

Ours: BatchStream (a fancy-index gather from the float16 memmap) + the D4 transform the training
step applies, num_workers=0 in this process (one core). Baseline, the team's loader as docs/design.md §6 (performance)
describes it: pandas rows, per-sample npz decode, per-sample numpy robust normalisation, numpy D4.
Also the one-off cost of building the shards from parquet (rows/s, one core). One JSON line.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # per-core figures

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)

from benchmarks.common import machine, synthetic_dataset  # noqa: E402
from halo_core.config import load_preset  # noqa: E402
from halo_core.data.augment import apply_d4  # noqa: E402
from halo_core.data.loader import BatchStream  # noqa: E402
from halo_core.data.preprocess import MAD_TO_SIGMA  # noqa: E402
from halo_core.data.samples import load_split_samples  # noqa: E402
from halo_core.data.stamps import decode_stamp  # noqa: E402


def ours(cfg, filtered: str, batch_size: int, epochs: int) -> float:
    shards, samples = load_split_samples(cfg, filtered, "train")
    stream = BatchStream(shards, samples, batch_size, seed=0, train=True, augmentation=cfg.augmentation)
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        stream.set_epoch(epoch)
        for i in range(len(stream)):
            x, y, _, elements = stream[i]
            x = apply_d4(x, elements).contiguous(memory_format=torch.channels_last)
            n += len(y)
    return n / (time.perf_counter() - t0)


def baseline(paired: str, batch_size: int, max_rows: int) -> float:
    """pandas rows + per-sample np.load + per-sample median/MAD + numpy D4, collated per batch."""
    frame = pd.concat(pd.read_parquet(p) for p in sorted(Path(paired, "train").glob("*.parquet"))).head(max_rows)
    rng = np.random.default_rng(0)
    batch, n, t0 = [], 0, time.perf_counter()
    for _, row in frame.iterrows():
        x = decode_stamp(row["stamp_npz"], source="bench", task_id=row["task_id"], column="stamp_npz")
        med = np.median(x, axis=(1, 2), keepdims=True)
        mad = np.median(np.abs(x - med), axis=(1, 2), keepdims=True)
        x = np.clip((x - med) / (MAD_TO_SIGMA * mad + 1e-12), -5, 20)
        x = np.rot90(x.transpose(0, 2, 1) if rng.integers(2) else x, rng.integers(4), axes=(1, 2))
        batch.append(np.ascontiguousarray(x))
        if len(batch) == batch_size:
            torch.from_numpy(np.stack(batch))
            n, batch = n + len(batch), []
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n-lrg", type=int, default=500, help="train LRGs (x4 injections = pairs)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cfg = load_preset("demo")
    with tempfile.TemporaryDirectory() as tmp:
        paired, filtered, filter_s = synthetic_dataset(Path(tmp), args.n_lrg)
        rows = sum(len(pd.read_parquet(f, columns=["task_id"])) for f in Path(paired).rglob("*.parquet"))
        ours_runs = [ours(cfg, filtered, args.batch_size, epochs=3) for _ in range(args.repeats)]
        base_runs = [baseline(paired, args.batch_size, max_rows=1024) for _ in range(args.repeats)]
    ours_s, base_s = statistics.median(ours_runs), statistics.median(base_runs)
    print(json.dumps({
        "benchmark": "data_path", "batch_size": args.batch_size, "repeats": args.repeats,
        "ours_samples_per_s_per_core": round(ours_s), "baseline_samples_per_s_per_core": round(base_s),
        "speedup": round(ours_s / base_s, 1), "target_samples_per_s_per_core": 20000,
        "build_shards_rows_per_s_per_core": round(rows / filter_s), "build_rows": rows,
        "normalization": cfg.normalization, "augmentation": "D4 (rot90 x transpose)", **machine(),
    }))


if __name__ == "__main__":
    main()
