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

from halo_core.config import HaloConfig, stamp_keys
from halo_core.data.known_lenses import DEFAULT_RADIUS_ARCSEC, crossmatch
from halo_core.data.preprocess import preprocess
from halo_core.data.reader import read_parquet
from halo_core.data.stamps import STAMP_SIZE, decode_cutout, decode_stamp, refusal, status
from halo_core.errors import CheckpointError, ConfigError, HaloError, StampDecodeError
from halo_core.evaluation.calibration import Calibration, sigmoid
from halo_core.model.checkpoint import load_model, model_spec

log = logging.getLogger(__name__)


SCORED = "scored"
# `halo score` exits with this when some inputs were refused (their rows say why); 0 when all were scored
EXIT_SOME_REFUSED = 3


def cutout_row(path: str, meta: dict) -> dict:
    """The identity of one single-cutout npz: its galaxy id (the file stem without one), sky position, brick."""
    return {"id": str(meta.get("galaxy_id", Path(path).stem)), "source": path,
            "ra": meta.get("ra"), "dec": meta.get("dec"), "brickname": meta.get("brickname")}


def _read_inputs(paths: list[str], input_keys) -> tuple[np.ndarray, pd.DataFrame]:
    """(stamps, rows): a file or blob that cannot be decoded is a row refused with its reason
    (``status``) and a blank stamp, never an exception that loses the other rows."""
    blank = np.zeros((3, STAMP_SIZE, STAMP_SIZE), np.float32)
    stamps, rows = [], []

    def refused(path: str, reason: str, why: str = "", **row) -> None:
        log.warning("%s: refused (%s)%s", path, reason, f": {why}" if why else "")
        stamps.append(blank)
        rows.append({"id": Path(path).stem, "source": path, "ra": None, "dec": None, "brickname": None, **row,
                     "status": status(reason, SCORED)})

    for path in paths:
        p = Path(path)
        if not p.is_file():
            refused(path, "missing_file" if not p.exists() else "not_a_file")
        elif path.endswith(".npz"):
            try:
                stamp, meta = decode_cutout(path)
            except StampDecodeError as err:
                refused(path, err.reason, str(err))
                continue
            stamps.append(stamp)
            rows.append({**cutout_row(path, meta), "status": SCORED})
        elif path.endswith(".parquet"):
            try:
                table = read_parquet(path)
                columns = [table[c].to_pylist() for c in ("stamp_npz", "task_id", "ra", "dec", "brickname")]
            except (HaloError, OSError, KeyError) as err:
                refused(path, "corrupt_file", str(err))
                continue
            for blob, task_id, ra, dec, brickname in zip(*columns):
                row = {"id": task_id, "source": path, "ra": ra, "dec": dec, "brickname": brickname}
                try:
                    stamps.append(decode_stamp(blob, source=path, task_id=task_id, column="stamp_npz", keys=input_keys))
                    rows.append({**row, "status": SCORED})
                except StampDecodeError as err:
                    refused(path, err.reason, str(err), **row)
        else:
            refused(path, "unknown_format")
    return np.stack(stamps), pd.DataFrame(rows)


@dataclass(frozen=True)
class ScoringModel:
    """A model ready to score real galaxies: weights in eval mode, the sidecar's preprocessing, its calibration."""

    model: torch.nn.Module
    sidecar: dict
    calibration: Calibration | None
    prevalence: float

    @classmethod
    def load(cls, model_path: str, calibration: Calibration | None = None,
             prevalence: float | None = None) -> "ScoringModel":
        if prevalence is not None and not 0 < prevalence < 1:
            raise ConfigError(f"prevalence={prevalence}: a lens prevalence is in (0, 1), e.g. 1e-3")
        model, sidecar = load_model(model_path)
        if sidecar["needs_control"]:
            raise CheckpointError(
                f"{model_path}: this model reads {sidecar['input_channels']} channels (stamp + control stamp); "
                "a real survey galaxy has no arc-free control, so it cannot score real data. "
                "Train a 3-channel model (preset `recommended`).")
        calibration = calibration or (Calibration.from_dict(sidecar["calibration"]) if "calibration" in sidecar else None)
        return cls(model, sidecar, calibration, sidecar["config"]["deployment_prevalence"] if prevalence is None
                   else prevalence)

    @property
    def input_keys(self) -> tuple[str, ...]:
        return stamp_keys(self.sidecar["config"]["input_keys"])

    @property
    def max_nonfinite_frac(self) -> float:
        return self.sidecar["config"].get("max_nonfinite_pixel_frac",
                                          HaloConfig.model_fields["max_nonfinite_pixel_frac"].default)

    @property
    def columns(self) -> list[str]:
        """The numbers predict() returns, in order."""
        calibrated = ["probability", f"probability_at_prevalence_{self.prevalence:g}"] if self.calibration else []
        return ["score", *calibrated]

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

    def score_stamps(self, stamps: np.ndarray) -> dict[str, np.ndarray]:
        """``status`` per stamp (SCORED, or REFUSED + why: data.stamps.refusal's rules, or a non-finite
        score) and its numbers, NaN where refused. The few non-finite pixels a scored stamp may have
        (outside the core) are set to 0, the sky level."""
        states = np.array([status(refusal(s, self.max_nonfinite_frac), SCORED) for s in stamps], dtype=object)
        ok = states == SCORED
        out = {"status": states, **{c: np.full(len(stamps), np.nan) for c in self.columns}}
        if ok.any():
            for column, values in self.predict(np.nan_to_num(stamps[ok], nan=0.0, posinf=0.0, neginf=0.0)).items():
                out[column][ok] = values
        broken = ok & ~np.all([np.isfinite(out[c]) for c in self.columns], axis=0)
        if broken.any():  # a score that is not a number is a refusal, never a `scored` row with empty values
            log.warning("%d cutouts gave a non-finite score; refused", int(broken.sum()))
            states[broken] = status("nonfinite_score", SCORED)
            for c in self.columns:
                out[c][broken] = np.nan
        return out


def score(model_path: str, inputs: list[str], *, calibration: Calibration | None = None,
          prevalence: float | None = None, known_lens_radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> pd.DataFrame:
    """One row per galaxy: raw score, calibrated probability, probability at the deployment prevalence,
    and the nearest known lens (lenscat) within ``known_lens_radius_arcsec``; ``status`` is SCORED or why
    the row was refused (its numbers are then empty)."""
    scorer = ScoringModel.load(model_path, calibration, prevalence)
    stamps, table = _read_inputs(inputs, scorer.input_keys)
    decoded = (table["status"] == SCORED).to_numpy()
    for column in scorer.columns:
        table[column] = np.nan
    if decoded.any():
        scored = scorer.score_stamps(stamps[decoded])
        for column, values in scored.items():
            table.loc[decoded, column] = values
    refused = table["status"] != SCORED
    if refused.any():
        log.warning("%d of %d cutouts not scored: %s", int(refused.sum()), len(table), list(table["id"][refused]))
    table["nonfinite_pixels"] = ~np.isfinite(stamps).all(axis=(1, 2, 3))
    return pd.concat([table, crossmatch(table["ra"], table["dec"], known_lens_radius_arcsec)], axis=1)
