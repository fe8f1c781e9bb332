"""Trainer overhead: halo's training epoch vs a bare forward/backward/step loop, same model, batch,
memory format, precision, device and threads, in one process, for fp32 and for bf16. One JSON line.

- ``train_epoch``: samples/s inside train_one_epoch (memmap gather, D4 on the device, loss, grad
  norm, progress); the docs/design.md §6 (performance) target is <= 10 % overhead against the bare loop.
- ``whole_fit``: training samples/s over the whole fit() call, validation passes and checkpoint
  writes included (what a user waits for).
- ``bare_contiguous``: the bare loop in the default memory format, i.e. what channels_last buys.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import machine, synthetic_dataset
from halo_core.config import load_preset
from halo_core.data.samples import load_split_samples
from halo_core.model.network import bare_training_step, pick_device, step_seconds
from halo_core.training.trainer import fit


def bare_loop(cfg, steps: int, device: torch.device, channels_last: bool = True) -> float:
    step = bare_training_step(cfg.model_name, cfg.input_channels, cfg.batch_size, device, channels_last=channels_last,
                              bf16=cfg.resolved_precision() == "bf16", learning_rate=cfg.learning_rate,
                              weight_decay=cfg.weight_decay)
    # two warm-up steps (allocator, oneDNN/cuDNN kernel choice); the whole timed loop, as fit()'s rate is
    return steps * cfg.batch_size / sum(step_seconds(step, device, steps, warmup=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    # 2,000 demo LRGs keep ~1,600 train samples (whole bricks and quality cuts go): 6 batches of 256
    p.add_argument("--n-lrg", type=int, default=2000, help="train LRGs of the demo preset")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    args = p.parse_args()
    overrides = {"batch_size": args.batch_size, "epochs": args.epochs, "save_every_n_epochs": 1,
                 "num_workers": args.num_workers,
                 "scheduler": {"T_0": args.epochs}, "simulation": {"n_lrg": {"train": args.n_lrg, "val": 20, "test": 20}}}
    # fp32 and bf16 in one run, so their ratio is measured on one machine state (docs/design.md §12 (precision))
    with tempfile.TemporaryDirectory() as tmp:
        _, filtered, _ = synthetic_dataset(Path(tmp), args.n_lrg)
        rows = {precision: measure(load_preset("demo", {**overrides, "precision": precision}), filtered,
                                   Path(tmp) / precision, args.epochs) for precision in ("fp32", "bf16")}
    print(json.dumps({"benchmark": "trainer_overhead", **rows,
                      "bf16_speedup_train_epoch": round(rows["bf16"]["train_epoch_samples_per_s"]
                                                        / rows["fp32"]["train_epoch_samples_per_s"], 2),
                      "bf16_speedup_bare": round(rows["bf16"]["bare_samples_per_s"] / rows["fp32"]["bare_samples_per_s"], 2),
                      "target_overhead": 0.10, **machine()}))


def measure(cfg, filtered: str, run_dir: Path, epochs: int) -> dict:
    device = pick_device(cfg.device)
    _, samples = load_split_samples(cfg, filtered, "train")
    steps = len(samples) // cfg.batch_size
    if steps < 2:
        raise SystemExit(f"{len(samples)} train samples are fewer than 2 batches of {cfg.batch_size}: "
                         "raise --n-lrg or lower --batch-size")
    bare = bare_loop(cfg, steps, device)
    bare_contiguous = bare_loop(cfg, steps, device, channels_last=False)
    t0 = time.perf_counter()
    result = fit(cfg, filtered, str(run_dir), resume=False)
    fit_s = time.perf_counter() - t0
    epoch_rates = [h.samples_per_s for h in result.history]
    ours = max(epoch_rates[1:] or epoch_rates)  # the first epoch pays one-off warm-up, as the bare loop's skip
    whole = sum(h.samples_seen for h in result.history) / fit_s
    return {
        "precision": cfg.resolved_precision(), "batch_size": cfg.batch_size, "steps_per_epoch": steps,
        "epochs": epochs, "channels_last": cfg.channels_last, "num_workers": cfg.num_workers,
        "bare_samples_per_s": round(bare, 1), "bare_contiguous_samples_per_s": round(bare_contiguous, 1),
        "channels_last_speedup": round(bare / bare_contiguous, 2), "train_epoch_samples_per_s": round(ours, 1),
        "train_epoch_overhead": round(1 - ours / bare, 3),
        "whole_fit_samples_per_s": round(whole, 1), "whole_fit_overhead": round(1 - whole / bare, 3),
        "val_samples": result.samples["val"],
    }


if __name__ == "__main__":
    main()
