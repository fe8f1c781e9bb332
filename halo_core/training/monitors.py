"""The trainer's per-epoch record and the training monitors (the plan's §3.1 table) computed from a
run's history; the LR schedule's restart cycles in closed form."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import takewhile

from halo_core.config import HaloConfig

PROGRESS_EPOCHS = (10, 25, 50)  # the plan's progress reports


@dataclass
class EpochRecord:
    """One epoch of a run as the trainer measured it; the sidecar's history holds their to_dict()."""

    epoch: int  # 0-based
    lr: float  # the LR the epoch trained at
    train_loss: float
    grad_norm_max: float
    grad_norm_p99: float
    samples_per_s: float
    data_wait_share: float  # share of the epoch spent waiting for batches
    samples_seen: int
    val_loss: float
    val_auroc: float
    val_per_class_accuracy: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EpochRecord:
        return cls(**d)

    def summary(self) -> str:
        return (f"train_loss {self.train_loss:.4f} val_loss {self.val_loss:.4f} val_auroc {self.val_auroc:.4f} "
                f"lr {self.lr:.2e} {self.samples_per_s:.0f} samples/s data {100 * self.data_wait_share:.0f}%")


def run_history(sidecar: dict) -> list[EpochRecord]:
    """The per-epoch records a checkpoint's sidecar holds."""
    return [EpochRecord.from_dict(h) for h in sidecar["history"]]


def restart_cycles(T_0: int, T_mult: int) -> Iterator[tuple[int, int]]:
    """(first epoch, length) of each CosineAnnealingWarmRestarts cycle, stepped once per epoch."""
    start, period = 0, T_0
    while True:
        yield start, period
        start, period = start + period, period * T_mult


def cycle_starts(T_0: int, T_mult: int, until: int) -> list[int]:
    """Epochs (0-based) at which a cycle starts, below ``until``."""
    return [s for s, _ in takewhile(lambda c: c[0] < until, restart_cycles(T_0, T_mult))]


def cycle_of(epoch: int, T_0: int, T_mult: int) -> tuple[int, int]:
    """(first epoch, length) of the cycle ``epoch`` falls in."""
    return next((s, p) for s, p in restart_cycles(T_0, T_mult) if epoch < s + p)


def expected_lr(epoch: int, base_lr: float, T_0: int, T_mult: int, eta_min: float) -> float:
    """CosineAnnealingWarmRestarts stepped once per epoch, in closed form."""
    start, period = cycle_of(epoch, T_0, T_mult)
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * (epoch - start) / period)) / 2


def promoted_record(history: list[EpochRecord], best_epoch: int) -> EpochRecord:
    """The record of the epoch whose weights became model.pt (the last one without a best)."""
    return next((h for h in history if h.epoch == best_epoch), history[-1])


def monitor_report(sidecar: dict) -> dict[str, dict]:
    """Each monitor of the run that wrote a checkpoint's ``sidecar``: observed value, limit, passed. The
    schedule and the limits are the run's own stored config, not whatever the current config says."""
    cfg = HaloConfig.model_validate(sidecar["config"])
    history, best_epoch = run_history(sidecar), sidecar["best_epoch"]
    s = cfg.scheduler
    expected = [expected_lr(h.epoch, cfg.learning_rate, s.T_0, s.T_mult, s.eta_min) for h in history]
    lr_error = max(abs(h.lr - lr) / lr for h, lr in zip(history, expected))
    best = promoted_record(history, best_epoch)
    gap = best.val_loss - best.train_loss
    grad_max = max(h.grad_norm_max for h in history)
    grad_limit = cfg.go_no_go.max_grad_norm
    return {
        "lr_followed_schedule": {"value": lr_error, "limit": cfg.go_no_go.max_lr_schedule_error,
                                 "passed": lr_error <= cfg.go_no_go.max_lr_schedule_error,
                                 "unit": "max relative LR error"},
        "grad_norm": {"value": grad_max, "limit": grad_limit, "passed": grad_max < grad_limit,
                      "p99_last_epoch": history[-1].grad_norm_p99},
        "train_val_gap": {"value": gap, "limit": cfg.go_no_go.max_train_val_gap,
                          "passed": abs(gap) < cfg.go_no_go.max_train_val_gap, "epoch": best.epoch},
    }


def progress_summaries(history: list[EpochRecord]) -> list[dict]:
    """The plan's progress reports at epochs 10, 25 and 50, for the epochs the run reached."""
    by_epoch = {h.epoch + 1: h for h in history}
    return [{"epoch": e, "train_loss": by_epoch[e].train_loss, "val_loss": by_epoch[e].val_loss,
             "val_auroc": by_epoch[e].val_auroc, "lr": by_epoch[e].lr} for e in PROGRESS_EPOCHS if e in by_epoch]
