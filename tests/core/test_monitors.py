import pytest
import torch

from halo_core.config import load_preset
from halo_core.training.monitors import EpochRecord, expected_lr, monitor_report, progress_summaries


def test_expected_lr_matches_torch_scheduler_with_restarts():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2, eta_min=1e-6)
    for epoch in range(50):
        assert opt.param_groups[0]["lr"] == pytest.approx(expected_lr(epoch, 1e-3, 10, 2, 1e-6), rel=1e-9)
        sched.step()
    assert expected_lr(10, 1e-3, 10, 2, 1e-6) == pytest.approx(1e-3)  # the restart at epoch 10


def _history(n, lr_scale=1.0, grad=1.0, gap=0.02, **overrides):
    cfg = load_preset("smoke", {"epochs": n, **overrides})
    s = cfg.scheduler
    return cfg, [EpochRecord(epoch=e, lr=lr_scale * expected_lr(e, cfg.learning_rate, s.T_0, s.T_mult, s.eta_min),
                             train_loss=0.3, val_loss=0.3 + gap, val_auroc=0.9, grad_norm_max=grad, grad_norm_p99=grad,
                             samples_per_s=100.0, data_wait_share=0.1, samples_seen=64) for e in range(n)]


def _sidecar(cfg, history, best_epoch=1) -> dict:
    return {"config": cfg.model_dump(mode="json"), "history": [h.to_dict() for h in history], "best_epoch": best_epoch}


def test_monitors_pass_on_a_healthy_run_and_fail_on_each_fault():
    cfg, history = _history(2)
    assert all(m["passed"] for m in monitor_report(_sidecar(cfg, history)).values())
    assert not monitor_report(_sidecar(cfg, _history(2, lr_scale=2.0)[1]))["lr_followed_schedule"]["passed"]
    assert not monitor_report(_sidecar(cfg, _history(2, grad=12.0)[1]))["grad_norm"]["passed"]
    assert not monitor_report(_sidecar(cfg, _history(2, gap=0.5)[1]))["train_val_gap"]["passed"]


def test_monitors_read_the_runs_own_stored_config():
    """A run at half the current learning rate followed its own schedule: the stored config says so."""
    current = load_preset("smoke", {"epochs": 2})
    stored, history = _history(2, learning_rate=current.learning_rate / 2)
    assert monitor_report(_sidecar(stored, history))["lr_followed_schedule"]["passed"]
    assert not monitor_report(_sidecar(current, history))["lr_followed_schedule"]["passed"]


def test_progress_summaries_at_the_plan_epochs():
    _, history = _history(30)
    assert [p["epoch"] for p in progress_summaries(history)] == [10, 25]
