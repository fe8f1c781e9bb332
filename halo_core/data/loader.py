"""Batches from the memory-mapped shards, deterministic in (seed, epoch, batch) (docs/design.md §1 (domain) fact 6).

Each item of ``BatchStream`` is a whole batch: the sampler's permutation depends only on
(seed, epoch), batches are dealt to ranks round-robin, and each batch's augmentation is seeded by
(seed, epoch, batch index). So no two ranks or DataLoader workers read the same sample in an epoch,
and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from halo_core.data.augment import d4_elements
from halo_core.data.samples import CONTROL, SampleSet
from halo_core.data.shards import SplitShards


def gather(shards: SplitShards, samples: SampleSet, index: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Samples ``index`` as (B, C, 64, 64) ``dtype``; C is 6 when the control is appended. float16
    (the shards' own) for a GPU: half the bytes to pin and copy, converted there; numpy's conversion
    is twice torch's on one CPU thread, so float32 batches for a CPU are made here."""
    order = np.argsort(samples.rows[index], kind="stable")  # sorted reads are sequential in the memmap
    rows, slots = samples.rows[index][order], samples.slots[index][order]
    x = shards.pairs[rows, slots]
    if samples.with_control:
        x = np.concatenate([x, shards.pairs[rows, CONTROL]], axis=1)
    out = np.empty_like(x, dtype=dtype)
    out[order] = x
    return out


class BatchStream(Dataset):
    def __init__(self, shards: SplitShards, samples: SampleSet, batch_size: int, *, seed: int,
                 train: bool, augmentation=None, rank: int = 0, world_size: int = 1, dtype=np.float32):
        self.shards, self.samples, self.batch_size, self.dtype = shards, samples, batch_size, dtype
        self.seed, self.train, self.augmentation = seed, train, augmentation
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._epoch_batches: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        """This rank's batches of the current epoch, computed once per epoch: a permutation of every
        sample per __getitem__ would cost more than the gather itself at 1.4 M samples."""
        if self._epoch_batches is None or self._epoch_batches[0] != self.epoch:
            self._epoch_batches = (self.epoch, self._deal_batches())
        return self._epoch_batches[1]

    def _deal_batches(self) -> list[np.ndarray]:
        n = len(self.samples)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.train else np.arange(n)
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.train and len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches.pop()  # a ragged last batch would make epochs uneven across ranks
        usable = len(batches) - len(batches) % self.world_size if self.train else len(batches)
        return batches[self.rank:usable:self.world_size]

    def __len__(self) -> int:
        return len(self._batches())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x (B, C, 64, 64) dtype, labels (B,), sample index (B,), D4 element per sample (B,)).
        The D4 transform is applied by the consumer, on whatever device the batch ends up on."""
        index = self._batches()[i]
        x = torch.from_numpy(gather(self.shards, self.samples, index, self.dtype))
        elements = np.zeros(len(index), np.int64)
        if self.train and self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, i])
            aug = self.augmentation
            elements = d4_elements(rng, len(index), rot90=aug.random_rotation, flip=aug.random_flip,
                                   transpose=aug.random_transpose)
        return x, torch.from_numpy(self.samples.labels[index]), torch.from_numpy(index), torch.from_numpy(elements)


def make_loader(stream: BatchStream, num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(stream, batch_size=None, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False)
