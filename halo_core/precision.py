"""The `precision` key (auto | fp32 | bf16): which numerics the network runs in, for training and inference.

``auto`` resolves to bf16 autocast on CUDA and on CPUs with bf16 units (AMX-BF16 or AVX512-BF16: a
ResNet18 training step at 64x64 runs 1.6-1.7x faster there, a forward pass 2.6x; docs/design.md §6),
else fp32. A run records the *resolved* value (training hash, sidecar, card, report), so a model and the
threshold measured on it name the numerics they came from, whatever machine reads them later.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache
from pathlib import Path
from typing import Literal

Precision = Literal["fp32", "bf16"]
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@cache
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises a bf16 unit (the kernel's flag names; absent file = no)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve(preference: str, device_preference: str = "auto") -> Precision:
    """``preference`` with ``auto`` decided for the device ``device_preference`` picks here."""
    if preference in ("fp32", "bf16"):
        return preference  # type: ignore[return-value]
    if preference != "auto":
        raise ValueError(f"precision {preference!r}: use auto, fp32 or bf16")
    import torch  # here, not at import: the config hashes a resolved value without loading torch elsewhere

    on_cuda = device_preference != "cpu" and torch.cuda.is_available()
    return "bf16" if on_cuda or cpu_has_bf16() else "fp32"


def autocast(precision: str, device_type: str) -> AbstractContextManager:
    """The forward pass's numerics: bf16 autocast (weights and reductions stay fp32), or plain fp32."""
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
