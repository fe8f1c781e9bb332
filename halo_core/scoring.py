"""Scoring real survey galaxies: calibrated, prior-shifted lens probabilities (DESIGN §3, §5).

Reads both real layouts: paired-dataset parquet (the ``stamp_npz`` of each row) and single-cutout npz
(``cutout`` (101, 101, 3) HWC, central 64x64 crop). The preprocessing is the one stored in the
model's sidecar, never the current preset's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from halo_core.calibration import Calibration, sigmoid
from halo_core.checkpoint import load_model, model_spec
from halo_core.errors import CheckpointError, StampDecodeError
from halo_core.known_lenses import DEFAULT_RADIUS_ARCSEC, crossmatch
from halo_core.preprocess import preprocess
from halo_core.stamps import decode_cutout, decode_stamp

log = logging.getLogger(__name__)


def _read_inputs(paths: list[str], input_keys) -> tuple[np.ndarray, pd.DataFrame]:
    stamps, rows = [], []
    for path in paths:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as npz:
                stamp, meta = decode_cutout(path, npz)
            stamps.append(stamp)
            rows.append({"id": str(meta.get("galaxy_id", Path(path).stem)), "source": path,
                         "ra": meta.get("ra"), "dec": meta.get("dec"), "brickname": meta.get("brickname")})
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


def score(model_path: str, inputs: list[str], *, calibration: Calibration | None = None,
          prevalence: float | None = None, known_lens_radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> pd.DataFrame:
    """One row per galaxy: raw score, calibrated probability, probability at the deployment prevalence,
    and the nearest known lens (lenscat) within ``known_lens_radius_arcsec``."""
    model, sidecar = load_model(model_path)
    if sidecar["needs_control"]:
        raise CheckpointError(
            f"{model_path}: this model reads {sidecar['input_channels']} channels (stamp + control stamp); "
            "a real survey galaxy has no arc-free control, so it cannot score real data. "
            "Train a 3-channel model (preset `recommended`).")
    calibration = calibration or (Calibration.from_dict(sidecar["calibration"]) if "calibration" in sidecar else None)
    prevalence = prevalence or sidecar["config"]["deployment_prevalence"]
    stamps, table = _read_inputs(inputs, tuple(sidecar["config"]["input_keys"]))
    bad = ~np.isfinite(stamps).all(axis=(1, 2, 3))
    if bad.any():
        log.warning("%d stamps have non-finite pixels; set to 0 before scoring: %s",
                    int(bad.sum()), list(table["id"][bad]))
        stamps = np.nan_to_num(stamps, nan=0.0, posinf=0.0, neginf=0.0)
    x = torch.from_numpy(preprocess(stamps, model_spec(sidecar)))
    with torch.no_grad():
        logits = model(x).squeeze(1).numpy().astype(np.float64)
    table["score"] = sigmoid(logits)
    if calibration is not None:
        table["probability"] = calibration.probability(logits)
        table[f"probability_at_prevalence_{prevalence:g}"] = calibration.at_prevalence(logits, prevalence)
    table["nonfinite_pixels"] = bad
    return pd.concat([table, crossmatch(table["ra"], table["dec"], known_lens_radius_arcsec)], axis=1)
