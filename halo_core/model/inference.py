"""Scoring a split's samples (training-ready shards) with a trained network through the inference
engine: what the trainer's validation, calibration, the evaluation report and promotion share."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from halo_core.data.loader import BatchStream, make_loader
from halo_core.data.samples import SampleSet
from halo_core.data.shards import SplitShards
from halo_core.model.engine import Engine


def batch_dtype(device: torch.device):
    """Loader batches in float16 for GPUs (half the host-to-device traffic), float32 for CPUs."""
    return np.float16 if device.type == "cuda" else np.float32


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A loader batch -> float32 on ``device``; float16 batches (made for GPUs) are converted there."""
    x = x.to(device, non_blocking=True).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def predict_logits(model: nn.Module, shards: SplitShards, samples: SampleSet, batch_size: int,
                   device: torch.device, precision: str, channels_last: bool = True) -> np.ndarray:
    """Logits of every sample, in sample order, without augmentation, in ``precision`` (fp32 | bf16)."""
    engine = Engine(model, precision, device, batch_size=batch_size, channels_last=channels_last)
    stream = BatchStream(shards, samples, batch_size, seed=0, train=False, dtype=batch_dtype(device))
    out = np.empty(len(samples), np.float32)
    for (_, _, index, _), logits in engine.stream(make_loader(stream, 0, False), lambda batch: batch[0]):
        out[index.numpy()] = logits
    return out
