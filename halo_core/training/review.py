"""Configuration review: the plan's reviewer questions (what to monitor, is 50 epochs right) answered
from the configuration itself, before any GPU time is spent (issue 8).

Each rule reads config keys and returns a Finding naming those keys, the measured consequence and a
fix, or nothing when the config is consistent. The plan's text says normalisation is "per channel";
halo's per_sample_robust already takes its median and MAD per band, so no rule is needed for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from halo_core.config import HaloConfig
from halo_core.metrics import TARGET_METRIC
from halo_core.model.network import bare_training_step, pick_device, step_seconds
from halo_core.training.monitors import cycle_of, cycle_starts, expected_lr

INFO, WARN, ERROR = "info", "warn", "error"
# the last epoch's LR counts as annealed below this share of the way from eta_min back up to the peak
ANNEALED_SHARE = 0.05
# go/no-go thresholds and the metric each one is stated in
TARGET_METRICS = {"go_no_go.min_test_auroc": "auroc", "go_no_go.min_precision_at_recall_0_90": TARGET_METRIC}
# CPU warm-up batches are capped: a 256-batch ResNet18 step takes 5-9 s on a 2-core machine, and CPU
# time per sample hardly depends on the batch size, so a small batch measures the rate in ~1 s
CPU_WARMUP_BATCH = 16
WARMUP_STEPS = 3
MAX_BUDGET_HOURS = 24.0  # longer than a day of training steps on one device is worth a warning


@dataclass(frozen=True)
class Finding:
    rule: str
    keys: tuple[str, ...]
    severity: str  # info | warn | error
    message: str
    consequence: str
    fix: str


def _lr_share(cfg: HaloConfig, epoch: int) -> float:
    """How far epoch's LR sits from eta_min (0) towards the peak (1)."""
    s = cfg.scheduler
    lr = expected_lr(epoch, cfg.learning_rate, s.T_0, s.T_mult, s.eta_min)
    return (lr - s.eta_min) / (cfg.learning_rate - s.eta_min)


def lr_at_last_epoch(cfg: HaloConfig) -> Finding | None:
    """A run that stops mid-cycle keeps weights trained at a high LR, not an annealed minimum."""
    s = cfg.scheduler
    share = _lr_share(cfg, cfg.epochs - 1)
    if share <= ANNEALED_SHARE:
        return None
    last = s.eta_min + share * (cfg.learning_rate - s.eta_min)
    ends = cycle_starts(s.T_0, s.T_mult, 4 * cfg.epochs + s.T_0)[1:]  # a cycle ends where the next starts
    annealed = [e for e in ends if _lr_share(cfg, e - 1) <= ANNEALED_SHARE]
    before, after = [e for e in annealed if e < cfg.epochs][-1:], [e for e in annealed if e > cfg.epochs][:1]
    # the last epoch of a T-epoch cycle runs at share (1 - cos(pi / T)) / 2: at or below 5 % from T = 7
    min_period = math.ceil(math.pi / math.acos(1 - 2 * ANNEALED_SHARE))
    return Finding(
        "lr_annealed_at_last_epoch", ("epochs", "scheduler.T_0", "scheduler.T_mult", "scheduler.eta_min"), WARN,
        f"the last epoch ({cfg.epochs}) trains at lr {last:.3g}, {share:.0%} of the way from eta_min {s.eta_min:g} "
        f"to the peak {cfg.learning_rate:g}; restarts at epochs "
        f"{', '.join(str(e) for e in ends if e <= 2 * cfg.epochs)}",
        "the final weights come from a high LR, not an annealed minimum"
        + (f"; the best val loss is likely at the end of an earlier cycle (epoch {before[0]}), so the epochs after "
           "it cost GPU time without a chance to anneal" if before else ""),
        f"set epochs to an annealed cycle end ({' or '.join(str(e) for e in before + after)}), or use T_mult=1 with "
        "epochs a multiple of T_0" if before or after else
        f"lengthen scheduler.T_0 to at least {min_period} epochs: a shorter cycle never anneals",
    )


def patience_outlasts_restarts(cfg: HaloConfig) -> Finding | None:
    """After a restart the LR jumps back to its peak and val loss spikes; a patience no longer than the
    new cycle lets that spike stop training before the cycle anneals below the old best."""
    s, patience = cfg.scheduler, cfg.early_stopping.patience
    restarts = [r for r in cycle_starts(s.T_0, s.T_mult, cfg.epochs)[1:]
                if patience <= cycle_of(r, s.T_0, s.T_mult)[1]]
    if not restarts:
        return None
    periods = [cycle_of(r, s.T_0, s.T_mult)[1] for r in restarts]
    at_risk = [min(r + patience, cfg.epochs) for r in restarts]
    return Finding(
        "patience_outlasts_restart_cycles", ("early_stopping.patience", "scheduler.T_0", "scheduler.T_mult", "epochs"),
        WARN,
        f"early_stopping.patience={patience} is no longer than the cycle after the restart(s) at epoch(s) "
        f"{', '.join(str(r) for r in restarts)} (periods {', '.join(str(p) for p in periods)} epochs)",
        f"if {cfg.early_stopping.monitor} does not beat its pre-restart best within {patience} epochs of a "
        f"restart, training stops at epoch {' or '.join(str(e) for e in at_risk)}, before that cycle's LR anneals "
        f"(its minimum is at epoch {' or '.join(str(r + p) for r, p in zip(restarts, periods))})",
        f"set early_stopping.patience above {max(periods)}, or use T_mult=1 with a patience above T_0",
    )


def metrics_named_unambiguously(cfg: HaloConfig) -> Finding | None:
    """'precision@0.95' does not say whether recall or precision is held at 0.95; say how halo reads it."""
    rated = [m for m in cfg.metrics if "@" in m]
    if not rated:
        return None
    readings = [f"{m!r} = {m.partition('@')[0]} at {'recall' if m.startswith('precision') else 'precision'} "
                f"{m.partition('@')[2]}" for m in rated]
    return Finding(
        "metrics_named_unambiguously", ("metrics",), INFO,
        "halo reads " + "; ".join(readings) + " (the other rate is the one held fixed, as in the plan's "
        "target 'precision at 90 % recall')",
        "the plan's names alone can be read two ways that differ by up to the whole recall range; the report "
        "lists each under the plan's name with this reading",
        "nothing to change if this is the intended reading; halo computes no other one",
    )


def targets_measured(cfg: HaloConfig) -> Finding | None:
    """A go/no-go target stated in a metric the plan's own metrics list does not carry."""
    missing = {key: metric for key, metric in TARGET_METRICS.items() if metric not in cfg.metrics}
    if not missing:
        return None
    return Finding(
        "targets_measured_by_metrics", ("metrics", *missing), WARN,
        "go/no-go target(s) " + ", ".join(f"{k} (in {m})" for k, m in missing.items())
        + f" are not in metrics {list(cfg.metrics)}",
        "the plan's metrics list never shows the quantity its own target is stated in; halo's report "
        "computes it anyway and gates on it, but the plan's monitoring would not",
        f"add {', '.join(sorted(set(missing.values())))} to metrics",
    )


def input_deployable(cfg: HaloConfig) -> Finding | None:
    """6 input channels need the arc-free control stamp at inference, which a real galaxy does not have."""
    if not cfg.needs_control_at_inference:
        return None
    return Finding(
        "input_deployable", ("input_channels", "sample_construction"), ERROR,
        f"input_channels={cfg.input_channels} with sample_construction={cfg.sample_construction!r}: the model "
        "reads the control stamp as channels 3-5",
        "trainable, but not deployable: a real survey galaxy has no arc-free control, and with (ctrl, ctrl) "
        "negatives the task reduces to 'do channels 0-2 differ from 3-5'; promotion is blocked by "
        "evaluation_report.deployable_without_control",
        "input_channels=3, sample_construction=unpaired, normalization=residual_radial (preset recommended)",
    )


def estimated_train_samples(cfg: HaloConfig) -> int | None:
    """Train samples per epoch of the embedded synthetic dataset; None for an external train_path."""
    if cfg.train_path:
        return None
    rows = cfg.simulation.n_lrg["train"] * cfg.simulation.injections_per_lrg
    # paired constructions use each row twice (stamp and control); unpaired one half of each
    return 2 * rows if cfg.sample_construction in ("paired_6ch", "ctrl_negative") else rows


def measure_step_seconds(cfg: HaloConfig, steps: int = WARMUP_STEPS) -> dict:
    """Seconds per sample of forward/backward/step of the configured model on the current device: the
    fastest of ``steps`` timed steps after one untimed warm-up step, on random stamps."""
    device = pick_device(cfg.device)
    batch = cfg.batch_size if device.type == "cuda" else min(cfg.batch_size, CPU_WARMUP_BATCH)
    step = bare_training_step(cfg.model_name, cfg.input_channels, batch, device, channels_last=cfg.channels_last,
                              learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
    seconds = min(step_seconds(step, device, steps))  # the fastest step: other load on a shared machine only ever slows a step down
    return {"device": str(device), "batch_measured": batch, "steps": steps,
            "seconds_per_sample": seconds / batch}


def training_budget(cfg: HaloConfig, n_train_samples: int | None, timing: dict | None) -> Finding:
    """batch_size x epochs x dataset size as sample iterations and an estimated wall time."""
    s_per_sample = timing["seconds_per_sample"] if timing else None
    rate = (f"{1 / s_per_sample:,.0f} samples/s on {timing['device']} (measured at batch "
            f"{timing['batch_measured']}, {timing['steps']} steps)" if timing else "no timing measured")
    if n_train_samples is None:
        return Finding("training_budget", ("batch_size", "epochs", "train_path"), INFO,
                       f"dataset size unknown until the filtered dataset is built; {rate}",
                       "wall time = epochs x train samples / rate", "run `halo review --data <filtered dataset>`")
    steps = math.ceil(n_train_samples / cfg.batch_size) * cfg.epochs
    iterations = n_train_samples * cfg.epochs
    hours = iterations * s_per_sample / 3600 if timing else None
    too_long = hours is not None and hours > MAX_BUDGET_HOURS
    return Finding(
        "training_budget", ("batch_size", "epochs"), WARN if too_long else INFO,
        f"{cfg.epochs} epochs x {n_train_samples:,} train samples = {iterations:,} sample iterations in "
        f"{steps:,} steps of {cfg.batch_size}; {rate}",
        (f"~{hours:.2f} h of training steps at most" if hours is not None else "wall time not estimated")
        + " (early stopping may end sooner; val passes and data loading come on top)",
        f"over {MAX_BUDGET_HOURS:g} h: use nproc_per_node > 1, compile_model, or fewer epochs" if too_long
        else "none needed",
    )


# rule name (the Finding's rule and the Dagster check's name) -> rule
RULES: dict[str, Callable[[HaloConfig], Finding | None]] = {
    "lr_annealed_at_last_epoch": lr_at_last_epoch,
    "patience_outlasts_restart_cycles": patience_outlasts_restarts,
    "metrics_named_unambiguously": metrics_named_unambiguously,
    "targets_measured_by_metrics": targets_measured,
    "input_deployable": input_deployable,
}


def review_config(cfg: HaloConfig, n_train_samples: int | None = None, timing: dict | None = None) -> list[Finding]:
    """Every rule's finding, then the training budget (always reported)."""
    findings = [f for rule in RULES.values() if (f := rule(cfg)) is not None]
    n = n_train_samples if n_train_samples is not None else estimated_train_samples(cfg)
    return [*findings, training_budget(cfg, n, timing)]
