"""Scoring real survey galaxies: calibrated, prior-shifted lens probabilities (DESIGN §3, §5).

Reads both real layouts: paired-dataset parquet (the ``stamp_npz`` of each row) and single-cutout npz
(``cutout`` (101, 101, 3) HWC, central 64x64 crop). The preprocessing is the one stored in the
model's sidecar, never the current preset's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from halo_core.calibration import Calibration, sigmoid
from halo_core.checkpoint import load_model, model_spec
from halo_core.errors import CheckpointError, StampDecodeError
from halo_core.preprocess import preprocess
from halo_core.stamps import decode_cutout, decode_stamp

log = logging.getLogger(__name__)


def cutout_row(path: str, meta: dict) -> dict:
    """The identity of one single-cutout npz: its galaxy id (the file stem without one), sky position, brick."""
    return {"id": str(meta.get("galaxy_id", Path(path).stem)), "source": path,
            "ra": meta.get("ra"), "dec": meta.get("dec"), "brickname": meta.get("brickname")}


def _read_inputs(paths: list[str], input_keys) -> tuple[np.ndarray, pd.DataFrame]:
    stamps, rows = [], []
    for path in paths:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as npz:
                stamp, meta = decode_cutout(path, npz)
            stamps.append(stamp)
            rows.append(cutout_row(path, meta))
        elif path.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            columns = [table[c].to_pylist() for c in ("stamp_npz", "task_id", "ra", "dec", "brickname")]
            for blob, task_id, ra, dec, brickname in zip(*columns):
                stamps.append(decode_stamp(blob, source=path, task_id=task_id, column="stamp_npz", keys=input_keys))
                rows.append({"id": task_id, "source": path, "ra": ra, "dec": dec, "brickname": brickname})
        else:
            raise StampDecodeError(f"{path}: expected a .npz cutout or a .parquet paired file", "unknown_format")
    return np.stack(stamps), pd.DataFrame(rows)


@dataclass(frozen=True)
class ScoringModel:
    """A model ready to score real galaxies: weights in eval mode, the sidecar's preprocessing, its calibration."""

    model: torch.nn.Module
    sidecar: dict
    calibration: Calibration | None
    prevalence: float

    @classmethod
    def load(cls, model_path: str, calibration: Calibration | None = None, prevalence: float | None = None,
             map_location="cpu") -> "ScoringModel":
        model, sidecar = load_model(model_path, map_location)
        if sidecar["needs_control"]:
            raise CheckpointError(
                f"{model_path}: this model reads {sidecar['input_channels']} channels (stamp + control stamp); "
                "a real survey galaxy has no arc-free control, so it cannot score real data. "
                "Train a 3-channel model (preset `recommended`).")
        calibration = calibration or (Calibration.from_dict(sidecar["calibration"]) if "calibration" in sidecar else None)
        return cls(model, sidecar, calibration, prevalence or sidecar["config"]["deployment_prevalence"])

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(self.sidecar["config"]["input_keys"])

    def predict(self, stamps: np.ndarray) -> dict[str, np.ndarray]:
        """(N, 3, 64, 64) finite nanomaggies -> raw score and, with a calibration, the probabilities."""
        device = next(self.model.parameters()).device
        x = torch.from_numpy(preprocess(stamps, model_spec(self.sidecar))).to(device)
        with torch.no_grad():
            logits = self.model(x).squeeze(1).cpu().numpy().astype(np.float64)
        out = {"score": sigmoid(logits)}
        if self.calibration is not None:
            out["probability"] = self.calibration.probability(logits)
            out[f"probability_at_prevalence_{self.prevalence:g}"] = self.calibration.at_prevalence(logits, self.prevalence)
        return out


def score(model_path: str, inputs: list[str], *, calibration: Calibration | None = None,
          prevalence: float | None = None) -> pd.DataFrame:
    """One row per galaxy: raw score, calibrated probability, probability at the deployment prevalence."""
    scorer = ScoringModel.load(model_path, calibration, prevalence)
    stamps, table = _read_inputs(inputs, scorer.input_keys)
    bad = ~np.isfinite(stamps).all(axis=(1, 2, 3))
    if bad.any():
        log.warning("%d stamps have non-finite pixels; set to 0 before scoring: %s",
                    int(bad.sum()), list(table["id"][bad]))
        stamps = np.nan_to_num(stamps, nan=0.0, posinf=0.0, neginf=0.0)
    for column, values in scorer.predict(stamps).items():
        table[column] = values
    table["nonfinite_pixels"] = bad
    return table
