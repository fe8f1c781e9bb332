import numpy as np
import pandas as pd
import torch

from halo_core.config import AugmentationConfig
from halo_core.data.augment import apply_d4
from halo_core.data.loader import BatchStream
from halo_core.data.samples import build_samples
from halo_core.data.shards import SplitShards


def _shards(n=50):
    rng = np.random.default_rng(0)
    pairs = rng.normal(size=(n, 2, 3, 64, 64)).astype(np.float16)
    meta = pd.DataFrame({"ra": np.arange(n) * 0.1, "dec": np.zeros(n), "arc_snr": np.full(n, 10.0)})
    return SplitShards("train", pairs, meta)


def test_d4_elements_are_eight_distinct_transforms():
    x = torch.randn(8, 3, 64, 64)
    same = x[:1].expand(8, -1, -1, -1)
    out = apply_d4(same, torch.arange(8))
    flat = out.reshape(8, -1)
    assert len({tuple(v[:50].tolist()) for v in flat}) == 8
    five = torch.full((8,), 5)
    back = apply_d4(apply_d4(x, five), five)  # transpose-type elements are involutions
    torch.testing.assert_close(back, x)


def test_six_channel_samples_get_the_same_transform_on_stamp_and_control():
    shards = _shards()
    shards.pairs[:, 1] = shards.pairs[:, 0]  # control := stamp, so both halves must stay equal
    samples = build_samples(shards.meta, "paired_6ch", seed=0)
    stream = BatchStream(shards, samples, 16, seed=3, train=True, augmentation=AugmentationConfig())
    x, _, _, elements = stream[0]
    assert len(elements.unique()) > 1
    x = apply_d4(x, elements)
    torch.testing.assert_close(x[:, :3], x[:, 3:])


def test_batches_are_deterministic_per_epoch_and_differ_between_epochs():
    shards = _shards()
    samples = build_samples(shards.meta, "ctrl_negative", seed=0)
    a = BatchStream(shards, samples, 16, seed=3, train=True, augmentation=AugmentationConfig())
    b = BatchStream(shards, samples, 16, seed=3, train=True, augmentation=AugmentationConfig())
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y)
    b.set_epoch(1)
    assert not torch.equal(a[1][2], b[1][2]) and not torch.equal(a[1][3], b[1][3])


def test_ranks_see_disjoint_samples_that_cover_the_epoch():
    shards = _shards()
    samples = build_samples(shards.meta, "ctrl_negative", seed=0)  # 100 samples
    seen = []
    for rank in range(2):
        stream = BatchStream(shards, samples, 10, seed=0, train=True, rank=rank, world_size=2)
        seen.append(np.concatenate([stream[i][2].numpy() for i in range(len(stream))]))
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) == len(seen[1]) == 50 and len(set(seen[0]) | set(seen[1])) == 100


def test_eval_stream_keeps_every_sample_once_in_order():
    shards = _shards(23)
    samples = build_samples(shards.meta, "ctrl_negative", seed=0)
    stream = BatchStream(shards, samples, 10, seed=0, train=False)
    index = np.concatenate([stream[i][2].numpy() for i in range(len(stream))])
    np.testing.assert_array_equal(index, np.arange(46))
