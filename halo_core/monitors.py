"""Training monitors (the plan's §3.1 table), computed from a run's per-epoch history."""

from __future__ import annotations

import math

PROGRESS_EPOCHS = (10, 25, 50)  # the plan's progress reports


def expected_lr(epoch: int, base_lr: float, T_0: int, T_mult: int, eta_min: float) -> float:
    """CosineAnnealingWarmRestarts stepped once per epoch, in closed form."""
    t_cur, t_i = epoch, T_0
    while t_cur >= t_i:
        t_cur -= t_i
        t_i *= T_mult
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def promoted_record(history: list[dict], best_epoch: int) -> dict:
    """The history record of the epoch whose weights became model.pt (the last one without a best)."""
    return next(h for h in history if h["epoch"] == best_epoch) if best_epoch >= 0 else history[-1]


def monitor_report(history: list[dict], cfg, best_epoch: int) -> dict[str, dict]:
    """Each monitor: observed value, limit, passed."""
    s = cfg.scheduler
    expected = [expected_lr(h["epoch"], cfg.learning_rate, s.T_0, s.T_mult, s.eta_min) for h in history]
    lr_errors = [abs(h["lr"] - lr) / lr for h, lr in zip(history, expected)]
    best = promoted_record(history, best_epoch)
    gap = best["val_loss"] - best["train_loss"]
    grad_max = max(h["grad_norm_max"] for h in history)
    grad_limit = cfg.go_no_go.max_grad_norm
    return {
        "lr_followed_schedule": {"value": max(lr_errors), "limit": 1e-6, "passed": max(lr_errors) <= 1e-6,
                                 "unit": "max relative LR error"},
        "grad_norm": {"value": grad_max, "limit": grad_limit, "passed": grad_max < grad_limit,
                      "p99_last_epoch": history[-1]["grad_norm_p99"]},
        "train_val_gap": {"value": gap, "limit": cfg.go_no_go.max_train_val_gap,
                          "passed": abs(gap) < cfg.go_no_go.max_train_val_gap, "epoch": best["epoch"]},
    }


def progress_summaries(history: list[dict]) -> list[dict]:
    """The plan's progress reports at epochs 10, 25 and 50, for the epochs the run reached."""
    by_epoch = {h["epoch"] + 1: h for h in history}
    return [{"epoch": e, **{k: by_epoch[e][k] for k in ("train_loss", "val_loss", "val_auroc", "lr")}}
            for e in PROGRESS_EPOCHS if e in by_epoch]
