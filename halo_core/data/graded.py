"""Galaxies people graded "not a lens" (`halo grades import`, halo_core.survey.grades), read back as training
negatives by the filter: the pixels of the cutout file the catalogue scored (docs/design.md §8 (trust))."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from halo_core import uris
from halo_core.config import stamp_keys
from halo_core.data.known_lenses import crossmatch
from halo_core.data.stamps import decode_cutout, decode_stamp
from halo_core.errors import ContractError

NOT_A_LENS = "not a lens"


def candidate_stamps(candidates: list[dict], input_keys) -> list[np.ndarray]:
    """Re-read the candidates' raw (3, 64, 64) stamps from their source files (a few files for a top-N)."""
    by_source: dict[str, list[str]] = {}
    for c in candidates:
        by_source.setdefault(c["source"], []).append(c["galaxy_id"])
    found: dict[tuple[str, str], np.ndarray] = {}
    for source, ids in by_source.items():
        if source.endswith(".npz"):
            found[(source, ids[0])] = decode_cutout(uris.read_bytes(source), source)[0]
            continue
        fs, inner = uris.filesystem(source)
        with fs.open(inner, "rb") as f:
            table = pq.read_table(f, columns=["stamp_npz", "task_id"], filters=[("task_id", "in", ids)])
        for blob, task_id in zip(table["stamp_npz"].to_pylist(), table["task_id"].to_pylist()):
            found[(source, task_id)] = decode_stamp(blob, source=source, task_id=task_id, column="stamp_npz",
                                                    keys=input_keys)
    return [found[(c["source"], c["galaxy_id"])] for c in candidates]


@dataclass
class GradedNegatives:
    stamps: np.ndarray  # (N, 3, 64, 64) float32, nanomaggies, as the catalogue read them
    meta: pd.DataFrame  # task_id, brickname, ra, dec, ... per stamp
    counts: dict[str, int]  # graded "not a lens", added, and dropped by reason


def graded_negatives(path: str, input_keys, held_out_bricks: set[str], min_separation_arcsec: float) -> GradedNegatives:
    """The galaxies graded "not a lens" in the grades file at ``path`` that may train: not in a held-out
    (val/test) brick, not within ``min_separation_arcsec`` of a known lens, all pixels finite."""
    if not uris.exists(path):
        raise ContractError(f"graded_negatives_path {path}: no such grades file (write it with `halo grades import`)")
    grades = pd.read_parquet(io.BytesIO(uris.read_bytes(path)))
    negatives = grades[grades["grade"] == NOT_A_LENS].reset_index(drop=True)
    counts = {"graded_not_a_lens": len(negatives)}
    held_out = negatives["brick"].astype(str).isin(held_out_bricks).to_numpy()
    near = crossmatch(negatives["ra"], negatives["dec"], min_separation_arcsec)["known_lens_name"].notna().to_numpy()
    counts["dropped_in_val_test_bricks"] = int(held_out.sum())
    counts["dropped_near_known_lens"] = int((near & ~held_out).sum())
    kept = negatives[~held_out & ~near].reset_index(drop=True)
    rows = [{"galaxy_id": str(r["id"]), "source": r["source"]} for _, r in kept.iterrows()]
    stamps = np.stack(candidate_stamps(rows, stamp_keys(input_keys))) if rows else np.zeros((0, 3, 64, 64), np.float32)
    finite = np.isfinite(stamps).all(axis=(1, 2, 3))
    counts["dropped_nonfinite"] = int((~finite).sum())
    kept, stamps = kept[finite].reset_index(drop=True), stamps[finite]
    counts["added"] = len(kept)
    meta = pd.DataFrame({"task_id": "graded-" + kept["id"].astype(str), "brickname": kept["brick"].astype(str),
                         "ra": kept["ra"].astype(float), "dec": kept["dec"].astype(float),
                         "arc_snr": np.nan, "is_control": 1, "graded_negative": True,
                         "graded_by": kept["grader"].astype(str), "source_file": kept["source"].astype(str)})
    return GradedNegatives(stamps.astype(np.float32), meta, counts)
