"""Experiment tracking: wandb when `log_to_wandb` is set, offline unless an API key is in the
environment, so a missing key or network never blocks or crashes training (`wandb sync` later)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _mode() -> str:
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _local_dir(out_dir: str) -> Path:
    local = Path(out_dir) if "://" not in out_dir else Path("wandb_runs")
    local.mkdir(parents=True, exist_ok=True)
    return local


class Tracker:
    """Logs per-epoch metrics to wandb, or does nothing when tracking is off."""

    def __init__(self, cfg, out_dir: str):
        self.run = None
        if not cfg.log_to_wandb:
            return
        import wandb

        mode = _mode()
        self.run = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name or None, dir=str(_local_dir(out_dir)),
                              config=cfg.model_dump(mode="json"), mode=mode, reinit="finish_previous",
                              settings=wandb.Settings(silent=True, console="off"))
        log.info("wandb %s run %s in %s", mode, self.run.id, self.run.dir)

    def log_epoch(self, record) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in record.to_dict().items() if k != "epoch"}, step=record.epoch)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def log_model_artifact(cfg, model_path: str, card_path: str, name: str, aliases: list[str], metadata: dict,
                       dagster_run_id: str, out_dir: str) -> str:
    """Log a promoted model as a W&B model artifact ``name`` with ``aliases`` (e.g. its version and
    `production`) from a run that records the Dagster run id; returns the W&B run path."""
    import wandb

    run = wandb.init(project=cfg.wandb_project, name=f"promote-{aliases[0]}", job_type="promotion",
                     dir=str(_local_dir(out_dir)), config={"dagster_run_id": dagster_run_id}, mode=_mode(),
                     reinit="finish_previous", settings=wandb.Settings(silent=True, console="off"))
    try:
        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_file(model_path, name="model.pt")
        artifact.add_file(card_path, name="model.json")
        run.log_artifact(artifact, aliases=aliases)
        path = "/".join(run.path) if isinstance(run.path, (list, tuple)) else str(run.path)
        log.info("wandb %s: model artifact %s %s in run %s", run.settings.mode, name, aliases, path)
        return path
    finally:
        run.finish()
