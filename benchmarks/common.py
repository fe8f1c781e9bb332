"""Shared by the benchmarks: machine facts for every JSON line, and one small synthetic dataset."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

from halo_core.config import load_preset
from halo_core.data.filtering import build_filtered_dataset
from halo_core.simulate import simulate_dataset


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "machine": platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__,
    }


def synthetic_dataset(root: Path, n_lrg_train: int, preset: str = "demo") -> tuple[str, str, float]:
    """(paired dir, filtered dir, filter seconds) for a dataset of ~4*n_lrg_train train pairs."""
    cfg = load_preset(preset, {"simulation": {"n_lrg": {"train": n_lrg_train, "val": 20, "test": 20}}})
    paired, filtered = root / "paired", root / "filtered"
    simulate_dataset(paired, cfg.simulation)
    report = build_filtered_dataset(cfg, str(paired), str(filtered), on_ray=False)  # one core; Ray: benchmarks.survey
    return str(paired), str(filtered), report.seconds
