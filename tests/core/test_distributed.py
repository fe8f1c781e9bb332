"""Training under torchrun (2 CPU ranks, gloo) and the loader under DataLoader workers."""

import json
import os
import subprocess
import sys

import torch

from halo_core.data.loader import BatchStream, make_loader
from halo_core.data.samples import load_split_samples
from tests.factories import free_port


def test_each_sample_once_per_epoch_across_ranks_and_workers(filtered_dir, smoke_cfg):
    shards, samples = load_split_samples(smoke_cfg, filtered_dir, "train")
    ids = []
    for rank in range(2):
        stream = BatchStream(shards, samples, 8, seed=0, train=True, rank=rank, world_size=2)
        ids += [i for _, _, index, _ in make_loader(stream, num_workers=2, pin_memory=False) for i in index.tolist()]
    usable = (len(samples) // 8) // 2 * 2 * 8  # whole batches, dealt evenly to the two ranks
    assert len(ids) == len(set(ids)) == usable


def test_torchrun_two_ranks_trains_and_rank0_writes(tmp_path, filtered_dir, smoke_cfg):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "halo_core.train", "--preset", "smoke", "--set", "epochs=1", "--set", "num_workers=2",
           "--data", filtered_dir, "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sidecar = json.loads((tmp_path / "model.json").read_text())
    _, samples = load_split_samples(smoke_cfg, filtered_dir, "train")
    n_batches = len(samples) // smoke_cfg.batch_size
    assert sidecar["history"][0]["samples_seen"] == (n_batches // 2) * 2 * smoke_cfg.batch_size
    assert done.stderr.count("epoch 1/1") == 1  # only rank 0 logs
    assert torch.load(tmp_path / "model.pt", weights_only=True)["model"]["conv1.weight"].shape[1] == 3
