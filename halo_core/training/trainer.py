"""The trainer: fit() reads the filtered shards and writes checkpoints + a final model (docs/design.md §2 (graph)).

fit() reads top to bottom as the run's steps: check the data, reuse a finished run, build the model,
optimizer and schedule, resume or warm-start, then per epoch train on augmented batches, validate
(val loss / AUROC), step the LR schedule (once per epoch, so restarts fall at T_0, T_0 + T_0*T_mult, ...
epochs as the plan intends), early-stop on the monitored metric and checkpoint; last, choose the final
model. ``python -m halo_core.train`` runs the same function as ``halo train`` and the ``trained_model`` asset.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from halo_core import precision as numerics
from halo_core import uris
from halo_core.config import HaloConfig
from halo_core.data.augment import apply_d4
from halo_core.data.loader import BatchStream, make_loader
from halo_core.data.preprocess import PreprocessSpec
from halo_core.data.samples import SampleSet, load_split_samples
from halo_core.data.shards import SplitShards, check_dataset, data_fingerprint
from halo_core.errors import CheckpointError, TrainingError
from halo_core.metrics import auroc, per_class_accuracy
from halo_core.model.checkpoint import code_version, file_sha256, load_checkpoint, load_sidecar, save_checkpoint
from halo_core.model.inference import batch_dtype, predict_logits, to_device
from halo_core.model.network import build_model, pick_device
from halo_core.outputs import resumable_folder
from halo_core.training.monitors import EpochRecord, promoted_record, run_history
from halo_core.training.tracking import Tracker

log = logging.getLogger(__name__)
LAST, BEST, FINAL = "last.pt", "best.pt", "model.pt"


class EarlyStopping:
    """Lightning's EarlyStopping(monitor, mode, patience, min_delta), with a state_dict for resume."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float):
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0

    def improved(self, value: float) -> bool:
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Record this epoch's value; True when it is a new best."""
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.wait >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


@dataclass
class TrainResult:
    model_path: str
    history: list[EpochRecord]
    best_epoch: int
    stopped_early: bool
    resumed_from_epoch: int | None
    seconds: float
    samples: dict[str, dict[str, int]]
    reused: bool = False  # a finished run of the same key: nothing was trained

    @property
    def best(self) -> EpochRecord:
        """The record of the epoch whose weights became model.pt."""
        return promoted_record(self.history, self.best_epoch)


@dataclass
class TrainingData:
    train_shards: SplitShards
    train_samples: SampleSet
    val_shards: SplitShards
    val_samples: SampleSet

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return {"train": self.train_samples.counts, "val": self.val_samples.counts}


@dataclass
class TrainingState:
    """Everything a checkpoint restores: weights, optimizer, schedule, early stopping, history."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stopper: EarlyStopping
    history: list[EpochRecord] = field(default_factory=list)
    first_epoch: int = 0
    resumed_from: int | None = None

    def checkpoint(self, epoch: int) -> dict:
        return {"model": self.model.state_dict(), "epoch": epoch, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "early_stopping": self.stopper.state_dict(),
                "torch_rng": torch.get_rng_state()}

    def restore(self, state: dict, sidecar: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["early_stopping"])
        torch.set_rng_state(state["torch_rng"])
        self.history = run_history(sidecar)
        self.first_epoch = self.resumed_from = state["epoch"] + 1


def loss_function(cfg: HaloConfig, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """BCEWithLogitsLoss with the config's class weights and label smoothing."""
    pos_weight = None
    if cfg.class_weights is not None:
        neg_w, pos_w = cfg.class_weights
        pos_weight = torch.tensor(pos_w / neg_w, device=device)
    bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    eps = cfg.label_smoothing

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return bce(logits, labels * (1 - eps) + 0.5 * eps)

    return loss


def run_key(cfg: HaloConfig, dataset_dir: str, warm_start_from: str | None = None) -> str:
    """What identifies a training run (docs/design.md §9 (run keys)): the weight-determining config and the data's
    content, plus the starting model's weights when warm-starting. The run folder's name."""
    key = f"{cfg.training_hash()}-{data_fingerprint(dataset_dir)}"
    return f"{key}-from-{file_sha256(warm_start_from)[:8]}" if warm_start_from else key


def run_identity(cfg: HaloConfig, dataset_dir: str, warm_start_from: str | None) -> dict:
    """What every checkpoint's sidecar says about the run: model, preprocessing, config and data."""
    return {
        "model_name": cfg.model_name, "input_channels": cfg.input_channels,
        "needs_control": cfg.needs_control_at_inference, "preprocess": PreprocessSpec.from_config(cfg).to_dict(),
        "config": cfg.model_dump(mode="json"), "config_hash": cfg.config_hash(), "training_hash": cfg.training_hash(),
        "precision": cfg.resolved_precision(),
        "data_fingerprint": data_fingerprint(dataset_dir), "code_version": code_version(),
        "warm_start_from": file_sha256(warm_start_from) if warm_start_from else None,
    }


def require_same_run(path: str, sidecar: dict, identity: dict) -> None:
    """Refuse a checkpoint in the run folder that another run (config, data or start) wrote."""
    for name in ("training_hash", "data_fingerprint", "warm_start_from"):
        if sidecar.get(name) != identity[name]:
            raise CheckpointError(f"{path}: written with {name} {sidecar.get(name)}, this run has {identity[name]}; "
                                  "use a new out dir or --no-resume")


def load_training_data(cfg: HaloConfig, dataset_dir: str) -> TrainingData:
    data = TrainingData(*load_split_samples(cfg, dataset_dir, "train"), *load_split_samples(cfg, dataset_dir, "val"))
    for name, counts in data.counts.items():
        if min(counts.values()) == 0:
            raise TrainingError(f"{name} split has one class only {counts} with {cfg.sample_construction!r}")
    return data


def build_state(cfg: HaloConfig, device: torch.device) -> TrainingState:
    """A fresh model, AdamW and CosineAnnealingWarmRestarts, as the plan names them."""
    model = build_model(cfg.model_name, cfg.input_channels).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.scheduler.T_0, T_mult=cfg.scheduler.T_mult, eta_min=cfg.scheduler.eta_min)
    es = cfg.early_stopping
    return TrainingState(model, optimizer, scheduler, EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta))


def resume_or_warm_start(state: TrainingState, out_dir: str, identity: dict, *, resume: bool,
                         warm_start_from: str | None) -> None:
    """Continue this run from its last.pt, else start from ``warm_start_from``'s weights, else from scratch."""
    last = uris.join(out_dir, LAST)
    if resume and uris.exists(last):
        try:
            checkpoint, sidecar = load_checkpoint(last)
        except CheckpointError as err:
            log.warning("ignoring unusable %s, starting fresh: %s", last, err)
        else:
            require_same_run(last, sidecar, identity)
            state.restore(checkpoint, sidecar)
            log.info("resumed from %s at epoch %d", last, state.first_epoch)
            return
    if warm_start_from:
        state.model.load_state_dict(load_checkpoint(warm_start_from)[0]["model"])
        log.info("warm start from %s (sha256 %s)", warm_start_from, identity["warm_start_from"][:12])


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in a torchrun job; world_size 1 for a plain process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_preference: str) -> Distributed:
    """Join the process group torchrun describes in the environment: nccl on GPUs, gloo on CPUs."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_preference != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Distributed(rank, world_size, local_rank)


def for_training(model: nn.Module, cfg: HaloConfig, ctx: Distributed, device: torch.device) -> nn.Module:
    """The module the training steps call: DDP across ranks, compiled when asked. Checkpoints keep the
    bare model, never the wrapper or a compiled graph."""
    if ctx.world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile_model:
        model = torch.compile(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 64x64 input: let cuDNN pick the fastest kernels once
    return model


def _all_sum(values: list[float], ctx: Distributed) -> list[float]:
    if ctx.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def train_one_epoch(model, loader, optimizer, loss_fn, device, channels_last: bool, precision: str,
                    ctx: Distributed, progress_every_s: float = 30.0) -> dict:
    """One pass over this rank's batches; loss and throughput summed over all ranks."""
    model.train()
    losses, grad_norms, seen, data_s = [], [], 0, 0.0
    t0 = t_data = t_log = time.perf_counter()
    for step, (x, y, _, elements) in enumerate(loader):
        data_s += time.perf_counter() - t_data
        x = apply_d4(to_device(x, device, channels_last), elements)  # augment on the device, in batch form
        y = y.to(device, non_blocking=True)
        with numerics.autocast(precision, device.type):
            logits = model(x).squeeze(1)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norms.append(nn.utils.clip_grad_norm_(model.parameters(), math.inf).detach())  # no sync here
        optimizer.step()
        losses.append(loss.detach())
        seen += len(y)
        now = time.perf_counter()
        if ctx.is_main and now - t_log > progress_every_s:
            rate = seen / (now - t0)
            log.info("  batch %d/%d  %.0f samples/s  ETA %.0f s  loss %.4f", step + 1, len(loader),
                     rate * ctx.world_size, (len(loader) - step - 1) * len(y) / rate, loss.item())
            t_log = now
        t_data = time.perf_counter()
    seconds = time.perf_counter() - t0
    norms = torch.stack(grad_norms).float().cpu().numpy()  # one device sync per epoch, not per step
    loss_sum, n_steps, n_seen = _all_sum([float(torch.stack(losses).sum()), len(losses), seen], ctx)
    return {"train_loss": loss_sum / n_steps, "grad_norm_max": float(norms.max()),
            "grad_norm_p99": float(np.percentile(norms, 99)), "samples_per_s": n_seen / seconds,
            "data_wait_share": data_s / seconds, "samples_seen": int(n_seen)}


def validate(model: nn.Module, data: TrainingData, loss_fn, cfg: HaloConfig, device: torch.device,
             precision: str) -> dict:
    """Val loss, AUROC and per-class accuracy. Every rank scores the whole val split: identical metrics
    everywhere, so every rank takes the same early-stopping decision without a broadcast."""
    logits = predict_logits(model, data.val_shards, data.val_samples, cfg.batch_size, device, precision,
                            cfg.channels_last)
    labels = data.val_samples.labels
    return {"val_loss": float(loss_fn(torch.from_numpy(logits).to(device), torch.from_numpy(labels).to(device))),
            "val_auroc": auroc(labels, logits), "val_per_class_accuracy": per_class_accuracy(labels, logits)}


def save_epoch(state: TrainingState, record: EpochRecord, is_best: bool, cfg: HaloConfig, out_dir: str,
               identity: dict) -> None:
    """last.pt (everything a resume needs), best.pt on a new best, epoch_N.pt every save_every_n_epochs."""
    sidecar = {**identity, "epoch": record.epoch, "history": [h.to_dict() for h in state.history],
               "metrics": record.to_dict()}
    weights = {"model": state.model.state_dict(), "epoch": record.epoch}
    if is_best and cfg.save_best:
        save_checkpoint(uris.join(out_dir, BEST), weights, sidecar)
    if (record.epoch + 1) % cfg.save_every_n_epochs == 0:
        save_checkpoint(uris.join(out_dir, f"epoch_{record.epoch + 1:04d}.pt"), weights, sidecar)
    save_checkpoint(uris.join(out_dir, LAST), state.checkpoint(record.epoch), sidecar)


def write_final_model(state: TrainingState, data: TrainingData, stopped_early: bool, cfg: HaloConfig,
                      out_dir: str) -> None:
    """model.pt: the best epoch's weights (or the last epoch's without save_best) and the run's summary."""
    chosen = uris.join(out_dir, BEST if cfg.save_best and uris.exists(uris.join(out_dir, BEST)) else LAST)
    checkpoint, sidecar = load_checkpoint(chosen)
    save_checkpoint(uris.join(out_dir, FINAL), {"model": checkpoint["model"], "epoch": checkpoint["epoch"]},
                    {**sidecar, "history": [h.to_dict() for h in state.history],
                     "best_epoch": state.stopper.best_epoch, "stopped_early": stopped_early, "samples": data.counts})


def fit(cfg: HaloConfig, dataset_dir: str, out_dir: str, *, resume: bool = True,
        warm_start_from: str | None = None) -> TrainResult:
    """Train ``cfg`` on the shards in ``dataset_dir``; checkpoints and the final model go to ``out_dir``.
    A finished run there of the same key is reused, an unfinished one resumed (``resume``).
    ``warm_start_from``: a model.pt whose weights replace the random init of a fresh run.
    Under torchrun every rank calls this; rank 0 alone writes files and logs."""
    start = time.perf_counter()
    check_dataset(cfg, dataset_dir)
    identity = run_identity(cfg, dataset_dir, warm_start_from)
    final = uris.join(out_dir, FINAL)
    if resume and uris.exists(final):
        require_same_run(final, load_sidecar(final), identity)
        log.info("reusing the finished run in %s (same training hash and data fingerprint): nothing to train", out_dir)
        return training_result(out_dir, reused=True)

    ctx = init_distributed(cfg.device)
    if ctx.is_main:
        resumable_folder(out_dir, [dataset_dir, warm_start_from])  # a run folder: checkpoints written one by one
    device = pick_device(cfg.device, ctx.local_rank)
    precision = identity["precision"]
    torch.manual_seed(cfg.seed)  # before the model is built: its initial weights are the run's
    data = load_training_data(cfg, dataset_dir)
    state = build_state(cfg, device)
    resume_or_warm_start(state, out_dir, identity, resume=resume, warm_start_from=warm_start_from)
    model = for_training(state.model, cfg, ctx, device)
    stream = BatchStream(data.train_shards, data.train_samples, cfg.batch_size, seed=cfg.seed, train=True,
                         augmentation=cfg.augmentation, rank=ctx.rank, world_size=ctx.world_size,
                         dtype=batch_dtype(device))
    loader = make_loader(stream, cfg.num_workers, pin_memory=device.type == "cuda")
    loss_fn = loss_function(cfg, device)
    if ctx.is_main:
        log.info("training on %s%s: %s, channels_last %s, compiled %s, %d rank(s), %d loader worker(s)",
                 device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "",
                 "bf16 autocast" if precision == "bf16" else "fp32", cfg.channels_last, cfg.compile_model,
                 ctx.world_size, cfg.num_workers)

    tracker = Tracker(cfg, out_dir) if ctx.is_main else None
    stopped_early = state.stopper.should_stop and state.first_epoch > 0
    for epoch in range(state.first_epoch, cfg.epochs):
        if stopped_early:
            break
        stream.set_epoch(epoch)
        lr = state.optimizer.param_groups[0]["lr"]
        trained = train_one_epoch(model, loader, state.optimizer, loss_fn, device, cfg.channels_last, precision, ctx)
        if not math.isfinite(trained["train_loss"]):
            raise TrainingError(f"epoch {epoch}: train loss is {trained['train_loss']}; lr={lr:g}, "
                                f"max grad norm {trained['grad_norm_max']:g}")
        record = EpochRecord(epoch=epoch, lr=lr, **trained, **validate(state.model, data, loss_fn, cfg, device, precision))
        state.history.append(record)
        state.scheduler.step()
        is_best = state.stopper.update(getattr(record, cfg.early_stopping.monitor), epoch)
        stopped_early = state.stopper.should_stop
        if ctx.is_main:
            log.info("epoch %d/%d %s", epoch + 1, cfg.epochs, record.summary())
            save_epoch(state, record, is_best, cfg, out_dir, identity)
            tracker.log_epoch(record)
            if stopped_early:
                log.info("early stopping at epoch %d: %s did not improve for %d epochs (best %.4f at epoch %d)",
                         epoch + 1, state.stopper.monitor, state.stopper.patience, state.stopper.best,
                         state.stopper.best_epoch + 1)
    if ctx.world_size > 1:
        dist.barrier()  # rank 0's last checkpoint is on disk before anyone reads it

    if ctx.is_main:
        tracker.finish()
        write_final_model(state, data, stopped_early, cfg, out_dir)
    if ctx.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(model_path=final, history=state.history, best_epoch=state.stopper.best_epoch,
                       stopped_early=stopped_early, resumed_from_epoch=state.resumed_from,
                       seconds=time.perf_counter() - start, samples=data.counts)


def training_result(out_dir: str, reused: bool = False) -> TrainResult:
    """The TrainResult of a finished run, read back from its final model's sidecar (e.g. after torchrun)."""
    final = uris.join(out_dir, FINAL)
    sidecar = load_sidecar(final)
    return TrainResult(model_path=final, history=run_history(sidecar),
                       best_epoch=sidecar["best_epoch"], stopped_early=sidecar["stopped_early"],
                       resumed_from_epoch=None, seconds=math.nan, samples=sidecar.get("samples", {}), reused=reused)
