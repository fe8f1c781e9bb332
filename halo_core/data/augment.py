"""D4 augmentation of batches: 90-degree rotations and a transpose (docs/design.md §1 (domain)).

The transform acts on all channels of a sample, so a 6-channel (stamp, control) sample gets the same
one on both halves. A lens is a lens under any D4 element; the survey's pixel grid has no preferred
orientation at this resolution.
"""

from __future__ import annotations

import numpy as np
import torch

D4_SIZE = 8  # element e = rot90^(e % 4) after transpose^(e // 4)


def d4_elements(rng: np.random.Generator, n: int, *, rot90: bool, flip: bool, transpose: bool) -> np.ndarray:
    """n random D4 elements restricted to the enabled generators; flip and transpose each give the mirror."""
    k = rng.integers(0, 4, n) if rot90 else np.zeros(n, np.int64)
    mirror = rng.integers(0, 2, n) if (flip or transpose) else np.zeros(n, np.int64)
    return k + 4 * mirror


def apply_d4(batch: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W) with element ``elements[i]`` applied to sample i, on the batch's
    device (eight gathers and scatters per batch, whatever its size). The groups are found from the
    elements on the CPU: finding them on the GPU would wait for its queue every step, and the next
    batch could not be gathered while the GPU trains on this one."""
    elements = elements.cpu()
    out = torch.empty_like(batch)
    for e in torch.unique(elements).tolist():
        idx = (elements == e).nonzero().squeeze(1).to(batch.device, non_blocking=True)
        x = batch[idx]
        if e >= 4:
            x = x.transpose(-1, -2)
        out[idx] = torch.rot90(x, int(e % 4), dims=(-2, -1))
    return out
