"""Scoring real survey galaxies: calibrated, prior-shifted lens probabilities (docs/design.md §3 (data contract), §5 (verdict)).

Reads both real layouts: paired-dataset parquet (the ``stamp_npz`` of each row) and single-cutout npz
(``cutout`` (101, 101, 3) HWC, central 64x64 crop). The preprocessing is the one stored in the
model's sidecar, never the current preset's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

import numpy as np
import pandas as pd
import torch

from halo_core import uris
from halo_core.config import HaloConfig, stamp_keys
from halo_core.data.known_lenses import DEFAULT_RADIUS_ARCSEC, crossmatch
from halo_core.data.preprocess import PreprocessSpec, preprocess
from halo_core.data.reader import parquet_batches, parquet_rows
from halo_core.data.stamps import STAMP_SIZE, decode_cutout, decode_stamp, refusal, status
from halo_core.errors import CheckpointError, ConfigError, HaloError, StampDecodeError
from halo_core.evaluation.calibration import Calibration, sigmoid
from halo_core.model.checkpoint import load_model, model_precision, model_spec
from halo_core.model.engine import DEFAULT_BATCH, Engine
from halo_core.model.network import pick_device
from halo_core.outputs import streamed_file
from halo_core.progress import Progress

log = logging.getLogger(__name__)


SCORED = "scored"
REFUSED_NONFINITE_SCORE = status("nonfinite_score", SCORED)
# `halo score` exits with this when some inputs were refused (their rows say why); 0 when all were scored
EXIT_SOME_REFUSED = 3


def cutout_row(path: str, meta: dict) -> dict:
    """The identity of one single-cutout npz: its galaxy id (the file stem without one), sky position, brick."""
    return {"id": str(meta.get("galaxy_id", Path(path).stem)), "source": path,
            "ra": meta.get("ra"), "dec": meta.get("dec"), "brickname": meta.get("brickname")}


UNKNOWN_BRICK = "unknown"  # a cutout without a brickname (the catalogue still gives it a partition)


def brick_or_unknown(value) -> str:
    return str(value) if value not in (None, "") else UNKNOWN_BRICK


def _format_refusal(path: str) -> str | None:
    fs, inner = uris.filesystem(path)  # local or s3://
    if not fs.exists(inner):
        return "missing_file"
    if not fs.isfile(inner):
        return "not_a_file"
    return None if path.endswith((".npz", ".parquet")) else "unknown_format"


def input_rows(path: str) -> int:
    """Cutouts (rows of the output) in one input: a parquet file's footer count, 1 for an npz or an
    unreadable file (its refused row)."""
    if not path.endswith(".parquet") or _format_refusal(path):  # an npz is one row: no existence check here
        return 1
    try:
        return parquet_rows(path)
    except (HaloError, OSError):
        return 1


def count_inputs(paths: list[str]) -> int:
    return sum(input_rows(p) for p in paths)


def read_chunks(paths: list[str], input_keys, rows: int, bricks: set[str] | None = None
                ) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """(stamps, rows with their read ``status``) of at most ``rows`` cutouts at a time, in input order:
    streamed, so memory does not grow with the survey. A file or blob that cannot be decoded is a row
    refused with its reason and a NaN stamp, never an exception that loses the other rows. With
    ``bricks``, only the cutouts of those bricks (a paired-parquet row is skipped before its blob is
    decoded; an npz names its brick inside)."""
    blank = np.full((3, STAMP_SIZE, STAMP_SIZE), np.nan, np.float32)
    stamps, table = [], []

    def chunk():
        out = np.stack(stamps), pd.DataFrame(table)
        stamps.clear()
        table.clear()
        return out

    def refused(path: str, reason: str, why: str = "", **row) -> None:
        log.warning("%s: refused (%s)%s", path, reason, f": {why}" if why else "")
        stamps.append(blank)
        table.append({"id": Path(path).stem, "source": path, "ra": None, "dec": None, "brickname": None, **row,
                      "status": status(reason, SCORED)})

    for path in paths:
        if reason := _format_refusal(path):
            refused(path, reason)
        elif path.endswith(".npz"):
            try:
                stamp, meta = decode_cutout(uris.read_bytes(path), path)
            except StampDecodeError as err:
                if bricks is None or UNKNOWN_BRICK in bricks:
                    refused(path, err.reason, str(err))
            else:
                if bricks is None or brick_or_unknown(meta.get("brickname")) in bricks:
                    stamps.append(stamp)
                    table.append({**cutout_row(path, meta), "status": SCORED})
        else:
            try:
                for batch in parquet_batches(path, ["stamp_npz", "task_id", "ra", "dec", "brickname"], rows):
                    for blob, task_id, ra, dec, brickname in zip(*(c.to_pylist() for c in batch.columns)):
                        if bricks is not None and brick_or_unknown(brickname) not in bricks:
                            continue
                        row = {"id": task_id, "source": path, "ra": ra, "dec": dec, "brickname": brickname}
                        try:
                            stamps.append(decode_stamp(blob, source=path, task_id=task_id, column="stamp_npz",
                                                       keys=input_keys))
                            table.append({**row, "status": SCORED})
                        except StampDecodeError as err:
                            refused(path, err.reason, str(err), **row)
                        if len(stamps) == rows:
                            yield chunk()
            except (HaloError, OSError, KeyError) as err:
                refused(path, "corrupt_file", str(err))
        if len(stamps) >= rows:
            yield chunk()
    if stamps:
        yield chunk()


@dataclass(frozen=True)
class ScoringInputs:
    """What turns decoded cutouts into network inputs, from the model's sidecar alone (no weights): the
    refusal rules and the preprocessing, run in the reading thread ahead of the forward."""

    spec: PreprocessSpec
    max_nonfinite_frac: float

    @classmethod
    def from_sidecar(cls, sidecar: dict) -> "ScoringInputs":
        return cls(model_spec(sidecar), sidecar["config"].get(
            "max_nonfinite_pixel_frac", HaloConfig.model_fields["max_nonfinite_pixel_frac"].default))

    def prepare(self, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(status, inputs): SCORED or why not per stamp, and the preprocessed float32 inputs (zeros where
        refused). The few non-finite pixels a scored stamp may have (outside the core) are set to 0, the
        sky level."""
        states = np.array([status(refusal(s, self.max_nonfinite_frac), SCORED) for s in stamps], dtype=object)
        ok = states == SCORED
        x = np.zeros(stamps.shape, np.float32)
        if ok.any():
            x[ok] = preprocess(np.nan_to_num(stamps[ok], nan=0.0, posinf=0.0, neginf=0.0), self.spec)
        return states, x


@dataclass(frozen=True)
class ScoringModel:
    """A model ready to score real galaxies: its inference engine in the model's own precision (the one
    its operating threshold was measured in), the sidecar's preprocessing, its calibration."""

    engine: Engine
    sidecar: dict
    calibration: Calibration | None
    prevalence: float

    @classmethod
    def load(cls, model_path: str, calibration: Calibration | None = None,
             prevalence: float | None = None, device: str = "auto") -> "ScoringModel":
        if prevalence is not None and not 0 < prevalence < 1:
            raise ConfigError(f"prevalence={prevalence}: a lens prevalence is in (0, 1), e.g. 1e-3")
        model, sidecar = load_model(model_path)
        if sidecar["needs_control"]:
            raise CheckpointError(
                f"{model_path}: this model reads {sidecar['input_channels']} channels (stamp + control stamp); "
                "a real survey galaxy has no arc-free control, so it cannot score real data. "
                "Train a 3-channel model (preset `recommended`).")
        if not precision_recorded(sidecar):
            log.warning("%s: %s", model_path, PRECISION_UNRECORDED)
        calibration = calibration or (Calibration.from_dict(sidecar["calibration"]) if "calibration" in sidecar else None)
        engine = Engine(model, model_precision(sidecar), pick_device(device))
        return cls(engine, sidecar, calibration, sidecar["config"]["deployment_prevalence"] if prevalence is None
                   else prevalence)

    @property
    def model(self) -> torch.nn.Module:
        return self.engine.model

    @property
    def input_keys(self) -> tuple[str, ...]:
        return stamp_keys(self.sidecar["config"]["input_keys"])

    @property
    def inputs(self) -> ScoringInputs:
        return ScoringInputs.from_sidecar(self.sidecar)

    @property
    def precision_label(self) -> str:
        return precision_label(self.sidecar)

    @property
    def columns(self) -> list[str]:
        """The numbers predict() returns, in order."""
        calibrated = ["probability", f"probability_at_prevalence_{self.prevalence:g}"] if self.calibration else []
        return ["score", *calibrated]

    def numbers(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        """Logits (NaN where not scored) -> raw score and, with a calibration, the probabilities."""
        logits = logits.astype(np.float64)
        out = {"score": sigmoid(logits)}
        if self.calibration is not None:
            out["probability"] = self.calibration.probability(logits)
            out[f"probability_at_prevalence_{self.prevalence:g}"] = self.calibration.at_prevalence(logits, self.prevalence)
        return out

    def predict(self, stamps: np.ndarray) -> dict[str, np.ndarray]:
        """(N, 3, 64, 64) finite nanomaggies -> raw score and, with a calibration, the probabilities."""
        spec = model_spec(self.sidecar)
        return self.numbers(self.engine.logits(stamps, prepare=lambda batch: preprocess(batch, spec)))

    def score_prepared(self, status: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        """``status`` and numbers of inputs ``ScoringInputs.prepare`` made; a refused row never reaches the
        network (its numbers are NaN)."""
        out = {"status": status.copy(), **self.numbers(self.engine.logits(x, keep=status == SCORED))}
        broken = (status == SCORED) & ~np.all([np.isfinite(out[c]) for c in self.columns], axis=0)
        if broken.any():  # a score that is not a number is a refusal, never a `scored` row with empty values
            log.warning("%d cutouts gave a non-finite score; refused", int(broken.sum()))
            out["status"][broken] = REFUSED_NONFINITE_SCORE
            for c in self.columns:
                out[c][broken] = np.nan
        return out

    def score_stamps(self, stamps: np.ndarray) -> dict[str, np.ndarray]:
        """``status`` per stamp (SCORED or why not) and its numbers, NaN where refused."""
        return self.score_prepared(*self.inputs.prepare(stamps))


def precision_recorded(sidecar: dict) -> bool:
    return "precision" in sidecar


def precision_label(sidecar: dict) -> str:
    """The numerics of a model's scores as outputs record them: its card's, or "fp32 (not on the card)"."""
    return model_precision(sidecar) if precision_recorded(sidecar) else f"{model_precision(sidecar)} (not on the card)"


PRECISION_UNRECORDED = "the model card does not record the precision its threshold was measured in: scored in fp32"


def score_chunks(scorer: ScoringModel, inputs: list[str], *, known_lens_radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
                 chunk_rows: int = DEFAULT_BATCH, timings: Counter | None = None, bricks: set[str] | None = None
                 ) -> Iterator[pd.DataFrame]:
    """The rows of ``score``, a chunk at a time, streamed: the next chunk is read, decoded and
    preprocessed in a thread while this one runs forward (zlib, numpy and torch release the GIL).
    ``timings`` accumulates the seconds of read+decode, preprocess, forward and the wait for input."""
    timings = Counter() if timings is None else timings
    prepared = scorer.inputs

    def read_and_prepare():
        chunks = read_chunks(inputs, scorer.input_keys, chunk_rows, bricks)
        while True:
            started = time.perf_counter()
            item = next(chunks, None)
            if item is None:
                return
            decoded = time.perf_counter()
            stamps, table = item
            read = table.pop("status").to_numpy()
            states, x = prepared.prepare(stamps)
            states = np.where(read != SCORED, read, states)  # a row refused when read keeps its reason
            timings["decode"] += decoded - started
            timings["preprocess"] += time.perf_counter() - decoded
            yield table, stamps, states, x

    for table, stamps, states, x in prefetched(read_and_prepare(), timings):
        started = time.perf_counter()
        for column, values in scorer.score_prepared(states, x).items():
            table[column] = values
        timings["forward"] += time.perf_counter() - started
        table["precision"] = scorer.precision_label
        table["nonfinite_pixels"] = ~np.isfinite(stamps).all(axis=(1, 2, 3))
        yield pd.concat([table, crossmatch(table["ra"], table["dec"], known_lens_radius_arcsec)], axis=1)


def prefetched(items: Iterator, timings: Counter, depth: int = 2) -> Iterator:
    """``items`` produced by a background thread up to ``depth`` ahead; the consumer's time blocked on
    them goes to ``timings["waiting"]``. An exception in the producer is raised in the consumer."""
    queue: Queue = Queue(depth)
    done = object()

    def produce():
        try:
            for item in items:
                queue.put(item)
        except BaseException as err:  # handed over: the consumer raises it
            queue.put(err)
        queue.put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    while True:
        started = time.perf_counter()
        item = queue.get()
        timings["waiting"] += time.perf_counter() - started
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


def score(model_path: str, inputs: list[str], *, calibration: Calibration | None = None,
          prevalence: float | None = None, known_lens_radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> pd.DataFrame:
    """One row per galaxy: raw score, calibrated probability, probability at the deployment prevalence,
    and the nearest known lens (lenscat) within ``known_lens_radius_arcsec``; ``status`` is SCORED or why
    the row was refused (its numbers are then empty); ``precision`` names the numerics of the scores."""
    scorer = ScoringModel.load(model_path, calibration, prevalence)
    table = pd.concat(list(score_chunks(scorer, inputs, known_lens_radius_arcsec=known_lens_radius_arcsec)),
                      ignore_index=True)
    log_refused(table)
    return table


def log_refused(table: pd.DataFrame) -> None:
    refused = table["status"] != SCORED
    if refused.any():
        log.warning("%d of %d cutouts not scored: %s", int(refused.sum()), len(table),
                    list(table["id"][refused])[:20])


@dataclass
class ScoreSummary:
    """What `halo score` wrote: row counts, the refusals by reason, the best rows, where the time went."""

    precision: str
    rows: int = 0
    refused: Counter = field(default_factory=Counter)
    top: pd.DataFrame | None = None
    timings: Counter = field(default_factory=Counter)


def score_to_csv(model_path: str, inputs: list[str], out: str, *, calibration: Calibration | None = None,
                 prevalence: float | None = None, known_lens_radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
                 top_n: int = 20) -> ScoreSummary:
    """``score`` streamed into the CSV ``out`` chunk by chunk (written whole or not at all), with a
    progress bar; memory stays flat whatever the number of inputs."""
    scorer = ScoringModel.load(model_path, calibration, prevalence)
    summary = ScoreSummary(scorer.precision_label)
    total = count_inputs(inputs)
    with streamed_file(out, newline="") as f, Progress(total, "halo score", "cutouts") as progress:
        for chunk in score_chunks(scorer, inputs, known_lens_radius_arcsec=known_lens_radius_arcsec,
                                  timings=summary.timings):
            started = time.perf_counter()
            chunk.to_csv(f, index=False, header=summary.rows == 0)
            summary.timings["write"] += time.perf_counter() - started
            summary.rows += len(chunk)
            summary.refused.update(chunk.loc[chunk["status"] != SCORED, "status"])
            summary.top = (pd.concat([summary.top, chunk]).sort_values("score", ascending=False, kind="stable")
                           .head(top_n))  # refused rows (NaN) last
            progress.update(len(chunk))
    if summary.refused:
        log.warning("%d of %d cutouts not scored: %s", sum(summary.refused.values()), summary.rows,
                    dict(summary.refused))
    return summary
