"""The inference engine: the one forward pass of every scoring path (issue 24)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from halo_core.model.engine import Engine
from halo_core.model.network import build_model

HALO_CORE = Path(__file__).resolve().parents[2] / "halo_core"


class Counting(nn.Module):
    """Logit = mean of the first channel; remembers how many rows went through it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return (x[:, :1].mean((2, 3)) * self.w).reshape(-1, 1)


def test_refused_rows_never_reach_the_network_and_read_nan():
    model = Counting()
    x = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((10, 3, 4, 4), np.float32)
    keep = np.array([True, False] * 5)
    logits = Engine(model, "fp32", batch_size=3, channels_last=False).logits(x, keep=keep)
    assert model.seen == 5
    assert np.isnan(logits[~keep]).all() and np.allclose(logits[keep], [0, 2, 4, 6, 8])


def test_prepare_runs_per_batch_and_logits_come_back_in_order():
    model = Counting()
    sizes = []

    def prepare(batch):
        sizes.append(len(batch))
        return batch * 2

    x = np.arange(7, dtype=np.float32)[:, None, None, None] * np.ones((7, 3, 4, 4), np.float32)
    logits = Engine(model, "fp32", batch_size=3, channels_last=False).logits(x, prepare=prepare)
    assert sizes == [3, 3, 1] and np.allclose(logits, 2 * np.arange(7))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_logits_are_the_models_in_the_engines_precision(precision):
    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    x = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        reference = model(torch.from_numpy(x)).squeeze(1).float().numpy()
    logits = Engine(model, precision, batch_size=2).logits(x)  # channels_last: the same numbers
    assert np.allclose(logits, reference, atol=1e-4 if precision == "fp32" else 2e-2)
    if precision == "bf16":  # the numerics differ: a threshold must be applied in its own
        fp32 = Engine(model, "fp32").logits(x)
        assert not np.allclose(logits, fp32, atol=1e-5)


def test_an_unresolved_precision_is_refused():
    with pytest.raises(ValueError, match="resolved precision"):
        Engine(Counting(), "auto")


def test_every_inference_forward_goes_through_the_engine():
    """No module but the engine switches a network to inference numerics (no_grad / autocast); the
    trainer's training step is the one other forward with autocast."""
    allowed = {"model/engine.py", "training/trainer.py", "model/network.py", "precision.py"}
    offenders = []
    for path in HALO_CORE.rglob("*.py"):
        rel = path.relative_to(HALO_CORE).as_posix()
        if rel not in allowed and re.search(r"torch\.no_grad|autocast\(|inference_mode", path.read_text()):
            offenders.append(rel)
    assert offenders == []


def test_rays_false_hang_warning_is_dropped_and_its_starvation_warning_kept():
    import logging

    pytest.importorskip("ray")
    from halo_core.ray_runtime import quiet_progress

    quiet_progress()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    for name, message in (("ray.data.dataset", "Warning: The Ray cluster currently does not have any available "
                                                 "CPUs. The Dataset job will hang unless more CPUs are freed up."),
                          ("ray.data._internal.execution.resource_manager", "The job may hang forever unless ...")):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            logger.warning(message)
        finally:
            logger.removeHandler(handler)
    assert [r.name for r in records] == ["ray.data._internal.execution.resource_manager"]
