"""Experiment tracking: wandb when `log_to_wandb` is set, offline unless an API key is in the
environment, so a missing key or network never blocks or crashes training (`wandb sync` later)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class Tracker:
    """Logs per-epoch metrics to wandb, or does nothing when tracking is off."""

    def __init__(self, cfg, out_dir: str):
        self.run = None
        if not cfg.log_to_wandb:
            return
        import wandb

        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        local = Path(out_dir) if "://" not in out_dir else Path("wandb_runs")
        local.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name or None, dir=str(local),
                              config=cfg.model_dump(mode="json"), mode=mode, reinit="finish_previous",
                              settings=wandb.Settings(silent=True, console="off"))
        log.info("wandb %s run %s in %s", mode, self.run.id, self.run.dir)

    def log_epoch(self, record: dict) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
