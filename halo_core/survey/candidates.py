"""The candidate catalogue: every real cutout of a survey scored by one model on Ray Data, streaming
(docs/design.md §13 (survey path)), written as parquet partitioned by brick (``<out>/brick=<name>/*.parquet``).

Inputs are the two real layouts ``halo score`` reads (paired parquet with ``stamp_npz`` blobs,
single-cutout npz), local or S3, files or folders of them. Decoding, refusal and preprocessing run in Ray
tasks (``ScoringInputs``), the forward pass in an actor pool (one actor per GPU when the cluster has
GPUs) through the inference engine in the model's precision, the very steps of ``halo score``; so the
scores are the same (within 1e-6). This process writes the partitions and shows the progress.
A cutout the model must not score is kept with status ``refused: <reason>`` and NaN scores.
Summaries and galleries go under ``_``-prefixed names, which parquet dataset readers skip.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from halo_core import uris
from halo_core.config import stamp_keys
from halo_core.data.known_lenses import crossmatch
from halo_core.data.reader import parquet_rows
from halo_core.data.stamps import STAMP_SIZE, decode_cutout, decode_stamp, read_cutout_meta
from halo_core.errors import CheckpointError, ContractError, StampDecodeError
from halo_core.evaluation.calibration import Calibration
from halo_core.model.checkpoint import file_sha256, load_sidecar
from halo_core.ray_runtime import pool_size, quiet_progress, ray_session
from halo_core.progress import Progress
from halo_core.survey.scoring import SCORED, ScoringInputs, ScoringModel, precision_label

log = logging.getLogger(__name__)
UNKNOWN_BRICK = "unknown"  # a cutout without a brickname still gets a partition
SUMMARY_FILE = "_summary.json"
GALLERY_DIR = "_gallery"
PARQUET_COLUMNS = ["stamp_npz", "task_id", "ra", "dec", "brickname"]
# A decode task's CPU request differs from a scoring actor's (1) on purpose: with equal requests Ray Data
# fuses the decode into the actors, which then decode and run forward in turn on one core while the
# other waits (the catalogue used half its CPU time that way). Two decode tasks share one CPU's quota.
DECODE_CPUS = 0.5
TIMING_PREFIX = "_seconds_"  # per-row shares of each stage's seconds, summed by the driver, never written
BRICK_PARTITIONING = pads.partitioning(pa.schema([("brick", pa.string())]), flavor="hive")


@dataclass(frozen=True)
class CatalogModel:
    """What a catalogue is scored with: the weights file, their version, the calibration, and the
    operating threshold (the calibrated probability at FPR ``operating_fpr`` on the synthetic test
    split, docs/design.md §5 (verdict)) with the TPR measured there."""

    path: str
    version: str
    calibration: Calibration
    prevalence: float
    operating_fpr: float
    threshold: float | None
    tpr_at_threshold: float | None

    @classmethod
    def from_checkpoint(cls, path: str, *, version: str | None = None, calibration: Calibration | None = None,
                        prevalence: float | None = None, operating_fpr: float = 1e-2) -> "CatalogModel":
        """A promoted model's card carries its calibration and test metrics; a bare model needs ``calibration``."""
        card = load_sidecar(path)
        calibration = calibration or (Calibration.from_dict(card["calibration"]) if "calibration" in card else None)
        if calibration is None:
            raise CheckpointError(f"{path}: no calibration in its card; the catalogue publishes calibrated "
                                  "probabilities: pass the calibrated_model's calibration.json")
        point = next((p for p in card.get("test_metrics", {}).get("tpr_at_fpr", []) if p["fpr"] == operating_fpr), {})
        return cls(path, version or weights_version(path), calibration,
                   prevalence or card["config"]["deployment_prevalence"], operating_fpr,
                   point.get("threshold"), point.get("tpr"))

    def expected_share_above(self) -> float | None:
        """Share of a survey above the threshold if its lens fraction is the deployment prevalence."""
        if self.threshold is None:
            return None
        return self.prevalence * self.tpr_at_threshold + (1 - self.prevalence) * self.operating_fpr


def weights_version(path: str) -> str:
    """A model without a registry version is named by its weights' bytes."""
    return "sha256:" + file_sha256(path)[:12]


def catalog_inputs(inputs: list[str]) -> tuple[list[str], list[str]]:
    """(parquet files, npz files) named by ``inputs``: files, or folders searched recursively."""
    parquet, npz = [], []
    for item in inputs:
        fs, path = uris.filesystem(item)
        if fs.isdir(path):
            parquet += uris.find(item, ".parquet")
            npz += uris.find(item, ".npz")
        elif item.endswith(".parquet"):
            parquet.append(item)
        elif item.endswith(".npz"):
            npz.append(item)
        else:
            raise ContractError(f"{item}: expected a .parquet file, a .npz cutout or a folder of them")
    if not parquet and not npz:
        raise ContractError(f"{inputs}: no .parquet or .npz cutouts found")
    return sorted(parquet), sorted(npz)


def _brick(value) -> str:
    return str(value) if value not in (None, "") else UNKNOWN_BRICK


def brick_index(inputs: list[str]) -> dict[str, list[str]]:
    """brick -> the input files holding its cutouts: one column of each parquet file and one small
    member of each npz, so a sensor can afford it on every tick."""
    parquet, npz = catalog_inputs(inputs)
    index: dict[str, set[str]] = {}
    for path in parquet:
        fs, inner = uris.filesystem(path)
        with fs.open(inner, "rb") as f:
            bricks = pq.read_table(f, columns=["brickname"])["brickname"].unique().to_pylist()
        for b in bricks:
            index.setdefault(_brick(b), set()).add(path)
    for path in npz:
        brick = read_cutout_meta(uris.read_bytes(path), path).get("brickname")
        index.setdefault(_brick(brick), set()).add(path)
    return {b: sorted(files) for b, files in sorted(index.items())}


def _decoded(rows: list[dict], stamps: list[np.ndarray], inputs: ScoringInputs, started: float) -> dict:
    """The batch a scoring actor gets: identities, status, and the network inputs, preprocessed here in
    the decode task (halo score's own refusals and preprocessing), so the actors only run forward."""
    out = {k: np.array([r[k] for r in rows], dtype=object) for k in ("galaxy_id", "source", "brick", "status")}
    out["ra"] = np.array([r["ra"] for r in rows], dtype=np.float64)
    out["dec"] = np.array([r["dec"] for r in rows], dtype=np.float64)
    stamps = np.stack(stamps) if stamps else np.zeros((0, 3, STAMP_SIZE, STAMP_SIZE), np.float32)
    decoded = time.perf_counter()
    ok = out["status"] == SCORED
    out["x"] = np.zeros(stamps.shape, np.float32)
    if ok.any():
        status, out["x"][ok] = inputs.prepare(stamps[ok])
        out["status"][ok] = [s if s == SCORED else f"refused: {s}" for s in status]
    n = max(1, len(rows))  # per-row shares of the batch's seconds: the driver sums them (where time goes)
    out[TIMING_PREFIX + "decode"] = np.full(len(rows), (decoded - started) / n)
    out[TIMING_PREFIX + "preprocess"] = np.full(len(rows), (time.perf_counter() - decoded) / n)
    return out


def _row(galaxy_id, source, ra, dec, brick, status=SCORED) -> dict:
    return {"galaxy_id": str(galaxy_id), "source": source, "ra": np.nan if ra is None else float(ra),
            "dec": np.nan if dec is None else float(dec), "brick": _brick(brick), "status": status}


def decode_parquet_batch(batch: pa.Table, input_keys, bricks, scheme: str, inputs: ScoringInputs) -> dict:
    """Paired-parquet rows -> network inputs; an undecodable blob becomes a refused row, not a failed job."""
    started = time.perf_counter()
    rows, stamps = [], []
    blank = np.zeros((3, STAMP_SIZE, STAMP_SIZE), np.float32)
    for blob, task_id, ra, dec, brick, path in zip(*(batch[c].to_pylist() for c in (*PARQUET_COLUMNS, "path"))):
        if bricks is not None and _brick(brick) not in bricks:
            continue
        source = scheme + path
        try:
            stamp, status = decode_stamp(blob, source=source, task_id=task_id, column="stamp_npz", keys=input_keys), SCORED
        except StampDecodeError as err:
            stamp, status = blank, f"refused: {err.reason}"
        rows.append(_row(task_id, source, ra, dec, brick, status))
        stamps.append(stamp)
    return _decoded(rows, stamps, inputs, started)


def decode_npz_batch(batch: dict, bricks, scheme: str, inputs: ScoringInputs) -> dict:
    started = time.perf_counter()
    rows, stamps = [], []
    for blob, path in zip(batch["bytes"], batch["path"]):
        source = scheme + str(path)
        try:
            stamp, meta = decode_cutout(bytes(blob), source)
            status = SCORED
        except StampDecodeError as err:
            stamp, meta, status = np.zeros((3, STAMP_SIZE, STAMP_SIZE), np.float32), {}, f"refused: {err.reason}"
        except Exception as err:  # a truncated or non-zip file: the same verdict as a corrupt blob
            log.warning("%s: unreadable npz (%s)", source, err)
            stamp, meta, status = np.zeros((3, STAMP_SIZE, STAMP_SIZE), np.float32), {}, "refused: corrupt_npz"
        if bricks is not None and _brick(meta.get("brickname")) not in bricks:
            continue
        rows.append(_row(meta.get("galaxy_id", Path(str(path)).stem), source, meta.get("ra"), meta.get("dec"),
                         meta.get("brickname"), status))
        stamps.append(stamp)
    return _decoded(rows, stamps, inputs, started)


class ScoreBatches:
    """A Ray actor: loads the model once (on its GPU when it has one), then runs batch after batch of
    inputs the decode tasks prepared through the inference engine, as halo score does."""

    def __init__(self, model: CatalogModel, torch_threads: int):
        import torch

        torch.set_num_threads(torch_threads)
        self.scorer = ScoringModel.load(model.path, model.calibration, model.prevalence)
        self.model = model

    def __call__(self, batch: dict) -> dict:
        started = time.perf_counter()
        n = len(batch["status"])
        out = {k: batch[k] for k in ("galaxy_id", "ra", "dec", "brick", "source", "status")}
        out.update({k: v for k, v in batch.items() if k.startswith(TIMING_PREFIX)})
        numbers = self.scorer.numbers(self.scorer.engine.logits(batch["x"], keep=batch["status"] == SCORED))
        out["score"] = numbers["score"]
        out["probability"] = numbers["probability"]
        out["probability_at_prevalence"] = numbers[f"probability_at_prevalence_{self.model.prevalence:g}"]
        out["precision"] = np.full(n, self.scorer.precision_label, dtype=object)
        out["deployment_prevalence"] = np.full(n, self.model.prevalence)
        out["model_version"] = np.full(n, self.model.version, dtype=object)
        for column, values in crossmatch(out["ra"], out["dec"]).items():  # the known lens at each position
            out[column] = values.to_numpy(dtype=float if column == "known_lens_sep_arcsec" else object)
        out[TIMING_PREFIX + "forward"] = np.full(n, (time.perf_counter() - started) / max(1, n))
        return out


def _by_scheme(files: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(f.split("://", 1)[0] + "://" if uris.is_remote(f) else "", []).append(f)
    return groups


def _arrow_fs(uri: str):
    """A pyarrow filesystem over fsspec's, so Ray reads S3 with the same credentials and endpoint as halo."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = uris.filesystem(uri)
    return PyFileSystem(FSSpecHandler(fs)), path


def _inner(uri: str) -> str:
    return uris.filesystem(uri)[1]


def _dataset(parquet: list[str], npz: list[str], input_keys, bricks, inputs: ScoringInputs):
    import ray.data

    parts = []
    for scheme, files in _by_scheme(parquet).items():
        fs = _arrow_fs(files[0])[0] if scheme else None
        ds = ray.data.read_parquet([_inner(f) for f in files], include_paths=True, filesystem=fs).select_columns(
            [*PARQUET_COLUMNS, "path"])
        parts.append(ds.map_batches(decode_parquet_batch, batch_format="pyarrow", num_cpus=DECODE_CPUS,
                                    fn_kwargs={"input_keys": input_keys, "bricks": bricks, "scheme": scheme,
                                               "inputs": inputs}))
    for scheme, files in _by_scheme(npz).items():
        fs = _arrow_fs(files[0])[0] if scheme else None
        ds = ray.data.read_binary_files([_inner(f) for f in files], include_paths=True, filesystem=fs)
        parts.append(ds.map_batches(decode_npz_batch, batch_format="numpy", num_cpus=DECODE_CPUS,
                                    fn_kwargs={"bricks": bricks, "scheme": scheme, "inputs": inputs}))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


@dataclass
class CatalogReport:
    """What one catalogue build wrote and what its rows look like (the checks read these)."""

    out_dir: str
    model_version: str
    operating_fpr: float
    threshold: float | None
    rows: int = 0
    scored: int = 0
    refused: Counter = field(default_factory=Counter)  # reason -> rows
    binary_scores: int = 0  # scores at exactly 0 or 1: a saturated (broken or mismatched) model
    above_threshold: int = 0
    expected_share_above: float | None = None
    bricks: dict = field(default_factory=dict)  # brick -> {rows, scored, above_threshold}
    top: list = field(default_factory=list)  # the top candidates by probability, best first
    seconds: float = 0.0
    precision: str = ""  # the numerics of the scores (the model's own; "not on the card" = fp32 assumed)
    timings: dict = field(default_factory=dict)  # stage -> seconds (decode, preprocess, forward: summed over workers)

    @property
    def refused_frac(self) -> float:
        return sum(self.refused.values()) / self.rows if self.rows else 0.0

    @property
    def binary_score_frac(self) -> float:
        return self.binary_scores / self.scored if self.scored else 0.0

    @property
    def share_above(self) -> float:
        return self.above_threshold / self.scored if self.scored else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(refused=dict(self.refused), refused_frac=self.refused_frac, binary_score_frac=self.binary_score_frac,
                 share_above=self.share_above)
        return d


def _catalog_dataset(out_dir: str) -> pads.Dataset:
    fs, path = _arrow_fs(out_dir) if uris.is_remote(out_dir) else (None, out_dir)
    return pads.dataset(path, format="parquet", partitioning=BRICK_PARTITIONING, filesystem=fs)


def summarize(out_dir: str, model: CatalogModel, bricks: list[str] | None, top_n: int) -> CatalogReport:
    """Counts and the top candidates of the written partitions scored by ``model`` (rows another
    model version scored are not comparable and left out), read back batch by batch."""
    report = CatalogReport(out_dir, model.version, model.operating_fpr, model.threshold,
                           expected_share_above=model.expected_share_above())
    data = _catalog_dataset(out_dir)
    wanted = pads.field("model_version") == model.version
    if bricks is not None:
        wanted &= pads.field("brick").isin(bricks)
    top = pd.DataFrame()
    for batch in data.to_batches(filter=wanted):
        df = batch.to_pandas()
        if df.empty:
            continue
        scored = df[df["status"] == SCORED]
        above = (scored["probability"] >= model.threshold if model.threshold is not None
                 else pd.Series(False, index=scored.index))
        report.rows += len(df)
        report.scored += len(scored)
        report.refused.update(df.loc[df["status"] != SCORED, "status"].str.removeprefix("refused: "))
        report.binary_scores += int(scored["score"].isin([0.0, 1.0]).sum())
        report.above_threshold += int(above.sum())
        for brick, group in df.groupby("brick"):
            b = report.bricks.setdefault(brick, {"rows": 0, "scored": 0, "above_threshold": 0})
            b["rows"] += len(group)
            b["scored"] += int((group["status"] == SCORED).sum())
            b["above_threshold"] += int(above.reindex(group.index, fill_value=False).sum())
        top = pd.concat([top, scored.nlargest(top_n, "probability")]).nlargest(top_n, "probability")
    report.top = top.to_dict("records")
    return report


def _clear(out_dir: str, bricks: list[str] | None) -> None:
    """A rebuild replaces what it rewrites: the whole catalogue, or just its bricks' partitions."""
    fs, path = uris.filesystem(out_dir)
    if bricks is None and fs.exists(path):
        foreign = [p for p in fs.ls(path, detail=False) if not Path(p).name.startswith(("brick=", "_"))]
        if foreign:
            raise ContractError(f"{out_dir}: holds {len(foreign)} entries that are not a catalogue's "
                                f"(e.g. {foreign[0]}); give an empty or catalogue folder")
    targets = [out_dir] if bricks is None else [uris.join(out_dir, f"brick={b}") for b in bricks]
    for target in targets:
        fs, path = uris.filesystem(target)
        if fs.exists(path):
            fs.rm(path, recursive=True) if uris.is_remote(target) else shutil.rmtree(path)


CATALOG_SCHEMA = pa.schema([  # one schema for every file, so a file of all-null cross-matches reads with the rest
    ("galaxy_id", pa.string()), ("ra", pa.float64()), ("dec", pa.float64()), ("source", pa.string()),
    ("status", pa.string()), ("score", pa.float64()), ("probability", pa.float64()),
    ("probability_at_prevalence", pa.float64()), ("precision", pa.string()), ("deployment_prevalence", pa.float64()),
    ("model_version", pa.string()), ("known_lens_name", pa.string()), ("known_lens_grading", pa.string()),
    ("known_lens_reference", pa.string()), ("known_lens_sep_arcsec", pa.float64())])
FLUSH_ROWS = 100_000  # rows the writer holds before it writes them out (one file per brick per flush)


class BrickWriter:
    """Scored batches -> ``<out>/brick=<name>/part-<n>.parquet``, a few large files per brick, memory bounded."""

    def __init__(self, out_dir: str):
        self.out_dir, self.pending, self.rows, self.files = out_dir, {}, 0, 0

    def add(self, batch: pa.Table) -> None:
        for brick in pc.unique(batch["brick"]).to_pylist():
            rows = batch.filter(pc.equal(batch["brick"], brick)).drop_columns(["brick"])
            self.pending.setdefault(brick, []).append(rows)
        self.rows += len(batch)
        if self.rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        for brick, tables in self.pending.items():
            table = pa.concat_tables(tables).select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA)
            uri = uris.join(self.out_dir, f"brick={brick}", f"part-{self.files:06d}.parquet")
            fs, path = uris.filesystem(uri)
            fs.makedirs(str(Path(path).parent), exist_ok=True)
            with fs.open(path, "wb") as f:
                pq.write_table(table, f)
            self.files += 1
        self.pending, self.rows = {}, 0


def _expected_rows(parquet: list[str], npz: list[str]) -> int:
    return sum(parquet_rows(p) for p in parquet) + len(npz)


def build_catalog(model: CatalogModel, inputs: list[str], out_dir: str, *, bricks: list[str] | None = None,
                  batch_size: int = 256, top_n: int = 50, num_cpus: int | None = None) -> CatalogReport:
    """Score the cutouts of ``inputs`` (only those in ``bricks`` when given) into ``out_dir``. Ray decodes
    and preprocesses, an actor pool runs forward, this process writes (and shows the progress)."""
    started = time.perf_counter()
    parquet, npz = catalog_inputs(inputs)
    wanted = None if bricks is None else set(bricks)
    sidecar = load_sidecar(model.path)
    timings: Counter = Counter()
    with ray_session(num_cpus):
        timings["ray_start"] = time.perf_counter() - started
        quiet_progress()
        actors, gpus = pool_size()
        scored = _dataset(parquet, npz, stamp_keys(sidecar["config"]["input_keys"]), wanted,
                          ScoringInputs.from_sidecar(sidecar)).map_batches(
            ScoreBatches, fn_constructor_kwargs={"model": model, "torch_threads": 1 if not gpus else 4},
            batch_size=batch_size, batch_format="numpy", concurrency=actors, num_gpus=gpus,
            num_cpus=0 if gpus else 1)
        _clear(out_dir, bricks)
        writer = BrickWriter(out_dir)
        total = _expected_rows(parquet, npz) if bricks is None else None
        with Progress(total, "halo catalog", "cutouts") as progress:
            batches = iter(scored.iter_batches(batch_size=None, batch_format="pyarrow"))
            while True:
                waited = time.perf_counter()
                batch = next(batches, None)
                timings["waiting"] += time.perf_counter() - waited
                if batch is None:
                    break
                written = time.perf_counter()
                stages = [c for c in batch.column_names if c.startswith(TIMING_PREFIX)]
                for column in stages:
                    timings[column.removeprefix(TIMING_PREFIX)] += pc.sum(batch[column]).as_py() or 0.0
                writer.add(batch.drop_columns(stages))
                timings["write"] += time.perf_counter() - written
                progress.update(len(batch))
            written = time.perf_counter()
            writer.flush()
            timings["write"] += time.perf_counter() - written
    report = summarize(out_dir, model, bricks, top_n)
    if report.rows == 0:
        raise ContractError(f"{inputs}: no cutouts{'' if bricks is None else f' in bricks {sorted(bricks)}'}")
    report.seconds = round(time.perf_counter() - started, 3)
    report.timings = {k: round(v, 3) for k, v in timings.items()}
    report.precision = precision_label(sidecar)
    log.info("catalogue %s: %d rows, %d scored, refused %s, %d above the threshold, %.1f s (%s)", out_dir,
             report.rows, report.scored, dict(report.refused), report.above_threshold, report.seconds,
             ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()))
    return report


def read_catalog(out_dir: str, bricks: list[str] | None = None) -> pd.DataFrame:
    table = _catalog_dataset(out_dir).to_table(filter=None if bricks is None else pads.field("brick").isin(bricks))
    return table.to_pandas()


def brick_versions(out_dir: str) -> dict[str, list[str]]:
    """brick -> the model versions its rows were scored with, for every brick partition written
    under ``out_dir`` (two columns read); empty when there is none."""
    fs, path = uris.filesystem(out_dir)
    if not fs.exists(path):
        return {}
    table = _catalog_dataset(out_dir).to_table(columns=["brick", "model_version"])
    pairs = table.group_by(["brick", "model_version"]).aggregate([]).to_pylist()
    out: dict[str, list[str]] = {}
    for pair in pairs:
        out.setdefault(pair["brick"], []).append(pair["model_version"])
    return {b: sorted(v) for b, v in sorted(out.items())}


def publish(report: CatalogReport, model: CatalogModel, name: str = "index") -> tuple[str, str]:
    """The summary (JSON) and the gallery of the top candidates beside the catalogue; their URIs."""
    from halo_core.survey.gallery import write_gallery

    summary = uris.join(report.out_dir, f"_summary_{name}.json" if name != "index" else SUMMARY_FILE)
    uris.atomic_write_json(summary, report.to_dict())
    gallery = write_gallery(report.top, model.path, uris.join(report.out_dir, GALLERY_DIR, f"{name}.html"),
                            title=f"halo candidates: {name if name != 'index' else 'all bricks'} (model {model.version})",
                            threshold=model.threshold)
    return summary, gallery
