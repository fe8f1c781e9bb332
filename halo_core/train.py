"""The trainer: fit() reads the filtered shards and writes checkpoints + a final model (DESIGN §2).

One loop, top to bottom: per epoch, train on augmented batches, evaluate val loss/AUROC, step the
LR schedule (once per epoch, so restarts fall at T_0, T_0 + T_0*T_mult, ... epochs as the plan
intends), early-stop on the monitored metric, checkpoint. ``python -m halo_core.train`` runs the same
function as ``halo train`` and the Dagster ``trained_model`` asset.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from halo_core import uris
from halo_core.checkpoint import code_version, file_sha256, load_checkpoint, load_sidecar, save_checkpoint
from halo_core.config import HaloConfig
from halo_core.errors import CheckpointError, ContractError, TrainingError
from halo_core.augment import apply_d4
from halo_core.loader import BatchStream, make_loader
from halo_core.metrics import auroc, per_class_accuracy
from halo_core.model import build_model, pick_device
from halo_core.preprocess import PreprocessSpec
from halo_core.samples import SampleSet, build_samples
from halo_core.shards import SplitShards, data_fingerprint, dataset_spec, open_split, read_manifest
from halo_core.tracking import Tracker

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
    history: list[dict]
    best_epoch: int
    stopped_early: bool
    resumed_from_epoch: int | None
    seconds: float
    samples: dict[str, dict[str, int]]
    reused: bool = False  # a finished run of the same key: nothing was trained


def _loss_fn(cfg: HaloConfig, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    pos_weight = None
    if cfg.class_weights is not None:
        neg_w, pos_w = cfg.class_weights
        pos_weight = torch.tensor(pos_w / neg_w, device=device)
    bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    eps = cfg.label_smoothing

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return bce(logits, labels * (1 - eps) + 0.5 * eps)

    return loss


def _batch_dtype(device: torch.device):
    return np.float16 if device.type == "cuda" else np.float32


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A loader batch -> float32 on ``device``; float16 batches (made for GPUs) are converted there."""
    x = x.to(device, non_blocking=True).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_logits(model: nn.Module, shards: SplitShards, samples: SampleSet, batch_size: int,
                   device: torch.device, channels_last: bool = True) -> np.ndarray:
    """Logits of every sample, in sample order, without augmentation."""
    model.eval()
    stream = BatchStream(shards, samples, batch_size, seed=0, train=False, dtype=_batch_dtype(device))
    out = np.empty(len(samples), np.float32)
    for x, _, index, _ in make_loader(stream, 0, False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(_to_device(x, device, channels_last)).squeeze(1)
        out[index.numpy()] = logits.float().cpu().numpy()
    return out


def run_key(cfg: HaloConfig, dataset_dir: str, warm_start_from: str | None = None) -> str:
    """What identifies a training run (DESIGN §9): the weight-determining config and the data's
    content, plus the starting model's weights when warm-starting. The run folder's name."""
    key = f"{cfg.training_hash()}-{data_fingerprint(dataset_dir)}"
    return f"{key}-from-{file_sha256(warm_start_from)[:8]}" if warm_start_from else key


def _same_run(sidecar: dict, base: dict) -> str | None:
    """Why a checkpoint in ``out_dir`` belongs to another run, or None when it is this run's."""
    for field in ("training_hash", "data_fingerprint", "warm_start_from"):
        if sidecar.get(field) != base[field]:
            return f"written with {field} {sidecar.get(field)}, this run has {base[field]}"
    return None


def load_split_samples(cfg: HaloConfig, dataset_dir: str, split: str) -> tuple[SplitShards, SampleSet]:
    shards = open_split(dataset_dir, split)
    return shards, build_samples(shards.meta, cfg.sample_construction, cfg.seed)


def check_dataset(cfg: HaloConfig, dataset_dir: str) -> None:
    """Refuse a leaking dataset or one preprocessed differently from what ``cfg`` asks for."""
    manifest = read_manifest(dataset_dir)
    if not manifest["integrity"]["ok"]:
        raise ContractError(f"{dataset_dir}: splits share bricks or LRGs: {manifest['integrity']}")
    dataset_spec(dataset_dir).require_same(PreprocessSpec.from_config(cfg), f"{dataset_dir} vs config")


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


def _all_sum(values: list[float], ctx: Distributed) -> list[float]:
    if ctx.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def train_one_epoch(model, loader, optimizer, loss_fn, device, channels_last: bool, ctx: Distributed,
                    progress_every_s: float = 30.0) -> dict:
    """One pass over this rank's batches; loss and throughput summed over all ranks."""
    model.train()
    losses, grad_norms, seen, data_s = [], [], 0, 0.0
    t0 = t_data = t_log = time.perf_counter()
    for step, (x, y, _, elements) in enumerate(loader):
        data_s += time.perf_counter() - t_data
        x = apply_d4(_to_device(x, device, channels_last), elements)  # augment on the device, in batch form
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
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


def fit(cfg: HaloConfig, dataset_dir: str, out_dir: str, *, resume: bool = True,
        warm_start_from: str | None = None) -> TrainResult:
    """Train ``cfg`` on the shards in ``dataset_dir``; checkpoints and the final model go to ``out_dir``.
    A finished run there of the same key is reused, an unfinished one resumed (``resume``).
    ``warm_start_from``: a model.pt whose weights replace the random init of a fresh run.
    Under torchrun every rank calls this; rank 0 alone writes files and logs."""
    start = time.perf_counter()
    check_dataset(cfg, dataset_dir)
    spec = PreprocessSpec.from_config(cfg)
    sidecar_base = {
        "model_name": cfg.model_name, "input_channels": cfg.input_channels,
        "needs_control": cfg.needs_control_at_inference, "preprocess": spec.to_dict(),
        "config": cfg.model_dump(mode="json"), "config_hash": cfg.config_hash(), "training_hash": cfg.training_hash(),
        "data_fingerprint": data_fingerprint(dataset_dir), "code_version": code_version(),
        "warm_start_from": file_sha256(warm_start_from) if warm_start_from else None,
    }
    final = uris.join(out_dir, FINAL)
    if resume and uris.exists(final):
        other = _same_run(load_sidecar(final), sidecar_base)
        if other:
            raise CheckpointError(f"{final}: {other}; use a new out dir or --no-resume")
        log.info("reusing the finished run in %s (same training hash and data fingerprint): nothing to train", out_dir)
        return training_result(out_dir, reused=True)
    ctx = init_distributed(cfg.device)
    if ctx.is_main:
        uris.check_writable(out_dir)
    device = pick_device(cfg.device, ctx.local_rank)
    torch.manual_seed(cfg.seed)
    train_shards, train_samples = load_split_samples(cfg, dataset_dir, "train")
    val_shards, val_samples = load_split_samples(cfg, dataset_dir, "val")
    samples = {"train": train_samples.counts, "val": val_samples.counts}
    for name, counts in samples.items():
        if min(counts.values()) == 0:
            raise TrainingError(f"{name} split has one class only {counts} with {cfg.sample_construction!r}")

    model = build_model(cfg.model_name, cfg.input_channels).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.scheduler.T_0, T_mult=cfg.scheduler.T_mult, eta_min=cfg.scheduler.eta_min)
    es = cfg.early_stopping
    stopper = EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta)
    loss_fn = _loss_fn(cfg, device)
    history: list[dict] = []
    first_epoch, resumed_from = 0, None
    last_path = uris.join(out_dir, LAST)
    if resume and uris.exists(last_path):
        try:
            state, sidecar = load_checkpoint(last_path)
        except CheckpointError as err:
            log.warning("ignoring unusable %s, starting fresh: %s", last_path, err)
        else:
            other = _same_run(sidecar, sidecar_base)
            if other:
                raise CheckpointError(f"{last_path}: {other}; use a new out dir or --no-resume")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            stopper.load_state_dict(state["early_stopping"])
            torch.set_rng_state(state["torch_rng"])
            history = sidecar["history"]
            first_epoch = resumed_from = state["epoch"] + 1
            log.info("resumed from %s at epoch %d", last_path, first_epoch)
    if resumed_from is None and warm_start_from:
        model.load_state_dict(load_checkpoint(warm_start_from)[0]["model"])
        log.info("warm start from %s (sha256 %s)", warm_start_from, sidecar_base["warm_start_from"][:12])

    bare_model = model  # what checkpoints hold: never the DDP wrapper, never a compiled graph
    if ctx.world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile_model:
        model = torch.compile(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 64x64 input: let cuDNN pick the fastest kernels once
    train_stream = BatchStream(train_shards, train_samples, cfg.batch_size, seed=cfg.seed, train=True,
                               augmentation=cfg.augmentation, rank=ctx.rank, world_size=ctx.world_size,
                               dtype=_batch_dtype(device))
    loader = make_loader(train_stream, cfg.num_workers, pin_memory=device.type == "cuda")
    if ctx.is_main:
        log.info("training on %s%s: %s, channels_last %s, compiled %s, %d rank(s), %d loader worker(s)",
                 device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "",
                 "bf16 autocast" if device.type == "cuda" else "fp32", cfg.channels_last, cfg.compile_model,
                 ctx.world_size, cfg.num_workers)
    stopped_early = stopper.should_stop and first_epoch > 0
    tracker = Tracker(cfg, out_dir) if ctx.is_main else None
    for epoch in range(first_epoch, cfg.epochs):
        if stopped_early:
            break
        train_stream.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        record = {"epoch": epoch, "lr": lr, **train_one_epoch(model, loader, optimizer, loss_fn, device,
                                                              cfg.channels_last, ctx)}
        if not math.isfinite(record["train_loss"]):
            raise TrainingError(f"epoch {epoch}: train loss is {record['train_loss']}; lr={lr:g}, "
                                f"max grad norm {record['grad_norm_max']:g}")
        # Every rank scores the whole val split: identical metrics everywhere, so every rank takes the
        # same early-stopping decision without a broadcast (val is a small share of an epoch).
        val_logits = predict_logits(bare_model, val_shards, val_samples, cfg.batch_size, device, cfg.channels_last)
        record["val_loss"] = float(loss_fn(torch.from_numpy(val_logits).to(device),
                                           torch.from_numpy(val_samples.labels).to(device)))
        record["val_auroc"] = auroc(val_samples.labels, val_logits)
        record["val_per_class_accuracy"] = per_class_accuracy(val_samples.labels, val_logits)
        history.append(record)
        scheduler.step()
        is_best = stopper.update(record[es.monitor], epoch)
        stopped_early = stopper.should_stop
        if ctx.is_main:
            log.info("epoch %d/%d train_loss %.4f val_loss %.4f val_auroc %.4f lr %.2e %.0f samples/s data %.0f%%",
                     epoch + 1, cfg.epochs, record["train_loss"], record["val_loss"], record["val_auroc"], lr,
                     record["samples_per_s"], 100 * record["data_wait_share"])
            sidecar = {**sidecar_base, "epoch": epoch, "history": history, "metrics": record}
            weights = {"model": bare_model.state_dict(), "epoch": epoch}
            if is_best and cfg.save_best:
                save_checkpoint(uris.join(out_dir, BEST), weights, sidecar)
            if (epoch + 1) % cfg.save_every_n_epochs == 0:
                save_checkpoint(uris.join(out_dir, f"epoch_{epoch + 1:04d}.pt"), weights, sidecar)
            save_checkpoint(last_path, {
                **weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "early_stopping": stopper.state_dict(), "torch_rng": torch.get_rng_state(),
            }, sidecar)
            tracker.log_epoch(record)
            if stopped_early:
                log.info("early stopping at epoch %d: %s did not improve for %d epochs (best %.4f at epoch %d)",
                         epoch + 1, es.monitor, es.patience, stopper.best, stopper.best_epoch + 1)
    if ctx.world_size > 1:
        dist.barrier()  # rank 0's last checkpoint is on disk before anyone reads it

    if ctx.is_main:
        tracker.finish()
        chosen = uris.join(out_dir, BEST if cfg.save_best and uris.exists(uris.join(out_dir, BEST)) else LAST)
        state, sidecar = load_checkpoint(chosen)
        save_checkpoint(final, {"model": state["model"], "epoch": state["epoch"]},
                        {**sidecar, "history": history, "best_epoch": stopper.best_epoch,
                         "stopped_early": stopped_early, "samples": samples})
    if ctx.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(
        model_path=final, history=history, best_epoch=stopper.best_epoch, stopped_early=stopped_early,
        resumed_from_epoch=resumed_from, seconds=time.perf_counter() - start, samples=samples,
    )


def training_result(out_dir: str, reused: bool = False) -> TrainResult:
    """The TrainResult of a finished run, read back from its final model's sidecar (e.g. after torchrun)."""
    final = uris.join(out_dir, FINAL)
    sidecar = load_sidecar(final)
    return TrainResult(model_path=final, history=sidecar["history"], best_epoch=sidecar["best_epoch"],
                       stopped_early=sidecar["stopped_early"], resumed_from_epoch=None, seconds=math.nan,
                       samples=sidecar.get("samples", {}), reused=reused)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    from halo_core.cli import config_args

    p = argparse.ArgumentParser(description="Train a lens finder on a filtered dataset.", add_help=add_help)
    config_args(p)
    p.add_argument("--data", required=True, help="filtered dataset directory (from `halo filter`)")
    p.add_argument("--out", required=True, help="directory for checkpoints and the final model.pt")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore an existing last.pt")
    p.add_argument("--warm-start-from", help="model.pt whose weights start a fresh run (config key warm_start)")
    return p


def main(argv: list[str] | None = None) -> None:
    from halo_core.config import load_config, parse_overrides

    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(args.preset, args.config, parse_overrides(args.set))
    result = fit(cfg, args.data, args.out, resume=args.resume, warm_start_from=args.warm_start_from)
    log.info("model: %s (best epoch %d, %.0f s)", result.model_path, result.best_epoch + 1, result.seconds)


if __name__ == "__main__":
    main()
