"""ResNet18 for 64x64 stamps with 3 (stamp) or 6 (stamp + control) input channels."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

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
