"""ResNet18 for 64x64 stamps with 3 (stamp) or 6 (stamp + control) input channels."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet18

from halo_core.data.stamps import STAMP_SIZE
from halo_core.errors import ConfigError

MODELS = {"resnet18": resnet18}


def build_model(model_name: str, input_channels: int) -> nn.Module:
    """torchvision architecture from scratch, one logit out, first conv adapted to ``input_channels``."""
    if model_name not in MODELS:
        raise ConfigError(f"model_name {model_name!r}: known {sorted(MODELS)}")
    model = MODELS[model_name](weights=None, num_classes=1)
    old = model.conv1
    model.conv1 = nn.Conv2d(input_channels, old.out_channels, kernel_size=old.kernel_size,
                            stride=old.stride, padding=old.padding, bias=False)
    return model


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """The configured device; on CUDA, this process's GPU (``local_rank`` under torchrun)."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but CUDA is not available here; use device=auto or cpu")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def bare_training_step(model_name: str, input_channels: int, batch: int, device: torch.device, *,
                       channels_last: bool = True, bf16: bool | None = None, compiled: bool = False,
                       learning_rate: float = 1e-3, weight_decay: float = 1e-4) -> Callable[[], None]:
    """One forward/backward/AdamW step of a fresh model on a fixed random batch, as a closure: the
    trainer's step without data, metrics or checkpoints, which timings compare against. bf16 autocast
    is on for CUDA unless ``bf16`` says otherwise, as in the trainer."""
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(model_name, input_channels).to(device, memory_format=fmt)
    x = torch.randn(batch, input_channels, STAMP_SIZE, STAMP_SIZE, generator=gen).to(device).contiguous(
        memory_format=fmt)
    y = (torch.rand(batch, generator=gen) < 0.5).float().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    forward = torch.compile(model) if compiled else model
    autocast = device.type == "cuda" if bf16 is None else bf16
    loss_fn = nn.BCEWithLogitsLoss()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = forward(x).squeeze(1)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(logits.float(), y).backward()
        optimizer.step()

    return step


def step_seconds(step: Callable[[], None], device: torch.device, steps: int, warmup: int = 1) -> list[float]:
    """Wall seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed ones (allocator, cuDNN
    autotuning, torch.compile), synchronising CUDA around each so a step's time is its own."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times
