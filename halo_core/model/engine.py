"""The inference engine: the one place a trained network runs forward (docs/design.md §6 (performance), §12 (precision)).

Every path that scores with a model goes through an ``Engine``: the trainer's validation, calibration,
the evaluation report and its diagnostics (saliency, occlusion, core perturbation, shift sets,
control substitutes, the realism probe), promotion, real validation, ``halo score``, the catalogue
and the selection function. It owns what decides the numbers and the speed:

- precision: the model's own (``model_precision(sidecar)``): a threshold measured in bf16 is applied
  in bf16, one measured in fp32 in fp32, whatever this machine would pick for a new run;
- batching, and a host-side ``prepare`` hook (the preprocessing) run per batch, so a caller never
  holds a whole preprocessed survey in memory;
- ``keep``: rows that must not be scored (a reader's refusal) never reach the network; their logits
  are NaN;
- device placement, channels_last, and on CUDA pinned host buffers copied on a side stream, so the
  copy of batch i+1 overlaps the forward of batch i.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from halo_core import precision as numerics

DEFAULT_BATCH = 256
Item = TypeVar("Item")
Prepare = Callable[[np.ndarray], np.ndarray]


class Engine:
    """A model in eval mode on its device, run in ``precision`` (fp32 | bf16)."""

    def __init__(self, model: nn.Module, precision: str, device: torch.device | None = None, *,
                 batch_size: int = DEFAULT_BATCH, channels_last: bool = True):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision {precision!r}: an engine runs a resolved precision, fp32 or bf16")
        self.device = device or next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
        self.model = model.to(self.device)
        if channels_last:  # ~2x for ResNet18 at 64x64 on CPU; a no-op for a model already converted
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision, self.batch_size, self.channels_last = precision, batch_size, channels_last
        self._copies = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def __repr__(self) -> str:
        return f"Engine({self.device}, {self.precision}, batch {self.batch_size}, channels_last {self.channels_last})"

    def to_device(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A host batch -> float32 on the device (float16 loader batches for GPUs are widened there);
        on CUDA from pinned memory on the copy stream, so it overlaps the forward pass in flight."""
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        if self._copies is not None and t.device.type == "cpu":
            t = t.pin_memory()
            with torch.cuda.stream(self._copies):
                t = t.to(self.device, non_blocking=True)
            t.record_stream(torch.cuda.current_stream(self.device))
        else:
            t = t.to(self.device)
        t = t.float()
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) float32 logits of a device batch, in the engine's precision; gradients flow when the
        caller enables them (saliency), so this is the one forward every loop shares."""
        if self._copies is not None:
            torch.cuda.current_stream(self.device).wait_stream(self._copies)
        with numerics.autocast(self.precision, self.device.type):
            return self.model(x).squeeze(1).float()

    @torch.no_grad()
    def stream(self, items: Iterable[Item], inputs: Callable[[Item], np.ndarray | torch.Tensor]
               ) -> Iterator[tuple[Item, np.ndarray]]:
        """(item, logits) for each item of ``items`` (loader batches, decoded survey batches), in order.
        The next item's inputs go to the device before this one's logits come back to the host."""
        self.model.eval()
        pending = None
        for item in items:
            x = self.to_device(inputs(item))
            if pending is not None:
                yield pending[0], pending[1].cpu().numpy()
            pending = (item, self.forward(x))
        if pending is not None:
            yield pending[0], pending[1].cpu().numpy()

    def logits(self, x: np.ndarray, prepare: Prepare | None = None, keep: np.ndarray | None = None) -> np.ndarray:
        """(N,) float32 logits of the array ``x``, ``prepare`` applied per batch on the host; rows where
        ``keep`` is False are not run and read NaN."""
        out = np.full(len(x), np.nan, np.float32)
        rows = np.arange(len(x)) if keep is None else np.flatnonzero(keep)
        chunks = (rows[lo:lo + self.batch_size] for lo in range(0, len(rows), self.batch_size))

        def inputs(idx: np.ndarray) -> np.ndarray:
            batch = np.asarray(x[idx] if keep is not None else x[idx[0]:idx[-1] + 1], np.float32)
            return prepare(batch) if prepare is not None else batch

        for idx, logits in self.stream(chunks, inputs):
            out[idx] = logits
        return out
