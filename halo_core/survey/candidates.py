"""The candidate catalogue: every real cutout of a survey scored by one model on Ray Data, streaming
(docs/design.md §13 (survey path)), written as parquet partitioned by brick (``<out>/brick=<name>/*.parquet``).

Inputs are the two real layouts ``halo score`` reads (paired parquet with ``stamp_npz`` blobs,
single-cutout npz), local or S3, files or folders of them. Ray Data hands whole files to a pool of
scoring workers (one actor per GPU when the cluster has GPUs), and each runs ``halo score``'s own pipeline
on them (``scoring.score_chunks``: the next chunk read, decoded and preprocessed in a thread while this one
runs forward in the model's precision); so the scores are ``halo score``'s, and no blob or stamp
travels through Ray's object store.
This process writes the brick partitions, shows the progress and sums where the time went.
A cutout the model must not score is kept with status ``refused: <reason>`` and NaN scores.
Summaries and galleries go under ``_``-prefixed names, which parquet dataset readers skip.
"""

from __future__ import annotations

import ctypes
import logging
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from halo_core import uris
from halo_core.data.stamps import read_cutout_meta
from halo_core.errors import CheckpointError, ContractError
from halo_core.evaluation.calibration import Calibration
from halo_core.model.checkpoint import file_sha256, load_sidecar
from halo_core.outputs import dataset_folder, refuse_overlap, write_file
from halo_core.progress import Progress
from halo_core.ray_runtime import pool_size, quiet_progress, ray_session
from halo_core.survey.scoring import SCORED, brick_or_unknown, input_rows, score_chunks

log = logging.getLogger(__name__)
SUMMARY_FILE = "_summary.json"
GALLERY_DIR = "_gallery"
ITEM_ROWS = 4096  # cutouts per worker call, at least (see work_items)
CALLED_AT = "_called_at"  # when the worker call that scored a row began (time.time()), never written
TIMING_PREFIX = "_seconds_"  # per-row shares of a stage's seconds, summed by the driver, never written
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
                        prevalence: float | None = None, operating_fpr: float | None = None) -> CatalogModel:
        """A promoted model's card carries its calibration and test metrics; a bare model needs ``calibration``.
        The operating point is the caller's config's, else the one the model's own config names."""
        card = load_sidecar(path)
        calibration = calibration or (Calibration.from_dict(card["calibration"]) if "calibration" in card else None)
        if calibration is None:
            raise CheckpointError(f"{path}: no calibration in its card; the catalogue publishes calibrated "
                                  "probabilities: pass the calibrated_model's calibration.json")
        operating_fpr = operating_fpr or card["config"]["operating_fpr"]
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
            index.setdefault(brick_or_unknown(b), set()).add(path)
    for path in npz:
        brick = read_cutout_meta(uris.read_bytes(path), path).get("brickname")
        index.setdefault(brick_or_unknown(brick), set()).add(path)
    return {b: sorted(files) for b, files in sorted(index.items())}


def _shares(seconds: float, n: int) -> np.ndarray:
    """A chunk's seconds as equal per-row shares: they travel with the rows, the driver sums them."""
    return np.full(n, seconds / max(1, n))


def _glibc():
    """glibc's allocator through ctypes; None where the C library is another (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


class ScoringWorker:
    """A Ray actor: loads the model once, then scores the files of each work item it is given (on its GPU
    when it has one) through ``halo score``'s pipeline, yielding the catalogue's columns chunk by chunk."""

    def __init__(self, model: CatalogModel, bricks: set[str] | None, batch_size: int, torch_threads: int):
        import torch

        from halo_core.survey.scoring import ScoringModel

        # glibc kept the free space its arenas had held each call's chunk arrays (31 MB of stamps, 12 MB of
        # inputs: above the mmap threshold at first, which then rises to their size), so the worker's RSS
        # grew call after call (+50-100 MB per work item, a catalogue's +12 % from 10k to 50k cutouts); a
        # trim after each call returns it (+3 %). A fixed low threshold, tried too, mapped every large array
        # and tensor afresh: the worker's rate fell from 0.70 to 0.47 of the bare forward.
        self.libc = _glibc()
        torch.set_num_threads(torch_threads)
        self.scorer = ScoringModel.load(model.path, model.calibration, model.prevalence)
        self.model, self.bricks, self.batch_size = model, bricks, batch_size

    def __call__(self, batch: dict) -> Iterator[dict]:
        called = time.time()  # wall clock, so the driver can tell start-up (until a worker's first call) apart
        files = [str(f) for item in batch["files"] for f in item]
        timings: Counter = Counter()
        for chunk in score_chunks(self.scorer, files, chunk_rows=self.batch_size, timings=timings, bricks=self.bricks):
            n, seen = len(chunk), dict(timings)
            timings.clear()
            out = {"galaxy_id": chunk["id"].astype(str).to_numpy(object), "source": chunk["source"].to_numpy(object),
                   "ra": chunk["ra"].to_numpy(float), "dec": chunk["dec"].to_numpy(float),
                   "brick": np.array([brick_or_unknown(b) for b in chunk["brickname"]], dtype=object),
                   "status": chunk["status"].to_numpy(object), "score": chunk["score"].to_numpy(float),
                   "probability": chunk["probability"].to_numpy(float),
                   "probability_at_prevalence": chunk[f"probability_at_prevalence_{self.model.prevalence:g}"]
                   .to_numpy(float),
                   "precision": chunk["precision"].to_numpy(object),  # the numerics of the scores
                   "deployment_prevalence": np.full(n, self.model.prevalence),
                   "model_version": np.full(n, self.model.version, dtype=object), CALLED_AT: np.full(n, called),
                   **{c: chunk[c].to_numpy(float if c == "known_lens_sep_arcsec" else object) for c in KNOWN_LENS},
                   **{TIMING_PREFIX + k: _shares(seen.get(k, 0.0), n) for k in ("decode", "preprocess", "forward")}}
            yield out
        if self.libc is not None:
            self.libc.malloc_trim(0)


def work_items(rows: dict[str, int]) -> list[dict]:
    """What one worker call scores: consecutive input files (``rows``: file -> its cutouts) of at least
    ITEM_ROWS cutouts together. Each call starts the pipeline anew, its first chunk's read not overlapped;
    a survey's parquet files (10^3-10^5 rows) are mostly an item each."""
    items, files, n = [], [], 0
    for f, count in rows.items():
        files.append(f)
        n += count
        if n >= ITEM_ROWS:
            items.append({"files": files})
            files, n = [], 0
    return items + ([{"files": files}] if files else [])


def _arrow_fs(uri: str):
    """A pyarrow filesystem over fsspec's, so pyarrow reads S3 with the same credentials and endpoint as halo."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = uris.filesystem(uri)
    return PyFileSystem(FSSpecHandler(fs)), path


@dataclass
class BrickCounts:
    rows: int = 0
    scored: int = 0
    above_threshold: int = 0


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
    bricks: dict[str, BrickCounts] = field(default_factory=dict)
    top: list[dict] = field(default_factory=list)  # the top catalogue rows by probability, best first
    seconds: float = 0.0
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
    root = uris.current(out_dir)  # on S3 a whole catalogue is a version folder named by its pointer
    fs, path = _arrow_fs(root) if uris.is_remote(root) else (None, root)
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
            b = report.bricks.setdefault(brick, BrickCounts())
            b.rows += len(group)
            b.scored += int((group["status"] == SCORED).sum())
            b.above_threshold += int(above.reindex(group.index, fill_value=False).sum())
        top = pd.concat([top, scored.nlargest(top_n, "probability")]).nlargest(top_n, "probability")
    report.top = top.to_dict("records")
    return report


BRICK_MARKER = "_brick.json"  # a brick partition's files, as its last build wrote them (the next removes only these)


KNOWN_LENS = ("known_lens_name", "known_lens_grading", "known_lens_reference", "known_lens_sep_arcsec")
CATALOG_SCHEMA = pa.schema([  # one schema for every file, so a file of all-null cross-matches reads with the rest
    ("galaxy_id", pa.string()), ("ra", pa.float64()), ("dec", pa.float64()), ("source", pa.string()),
    ("status", pa.string()), ("score", pa.float64()), ("probability", pa.float64()),
    ("probability_at_prevalence", pa.float64()), ("precision", pa.string()), ("deployment_prevalence", pa.float64()),
    ("model_version", pa.string()), ("known_lens_name", pa.string()), ("known_lens_grading", pa.string()),
    ("known_lens_reference", pa.string()), ("known_lens_sep_arcsec", pa.float64())])
FLUSH_ROWS = 100_000  # rows the writer holds before it writes them out (one file per brick per flush)


class BrickWriter:
    """Scored batches -> ``<folder>/brick=<name>/part-<build>-<n>.parquet`` in a local folder, a few large
    files per brick, memory bounded. The names are new to each build, so a brick's new files never
    overwrite the ones a reader may still be reading."""

    def __init__(self, folder: str):
        self.folder, self.build = Path(folder), uuid.uuid4().hex[:12]
        self.pending: dict[str, list[pa.Table]] = {}
        self.rows = self.files = 0

    def add(self, batch: pa.Table) -> None:
        for brick in pc.unique(batch["brick"]).to_pylist():
            rows = batch.filter(pc.equal(batch["brick"], brick)).select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA)
            self.pending.setdefault(brick, []).append(rows)
        self.rows += len(batch)
        if self.rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        for brick, tables in self.pending.items():
            folder = self.folder / f"brick={brick}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(tables), folder / f"part-{self.build}-{self.files:06d}.parquet")
            self.files += 1
        self.pending, self.rows = {}, 0

    def close(self) -> None:
        """The last rows out, then each brick's BRICK_MARKER naming its files."""
        self.flush()
        for brick_dir in self.folder.glob("brick=*"):
            files = sorted(p.name for p in brick_dir.glob("*.parquet"))
            write_file(str(brick_dir / BRICK_MARKER), uris.json_text({"files": files}).encode())


def _write_partitions(scored, folder: str, total: int | None, timings: Counter) -> float:
    """The scored rows as brick partitions under the local ``folder`` (a stage; S3 gets it uploaded
    whole), written here as they stream in, with the progress of ``total`` rows (None: unknown) shown.
    ``timings`` gets the seconds of each stage: the workers' (decode, preprocess, forward), this
    process's (write) and its wait for the workers (waiting). Returns when (time.time()) the first
    worker call began: scoring's start, once the workers had started and loaded the model."""
    writer, first_call = BrickWriter(folder), float("inf")
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
            first_call = min(first_call, pc.min(batch[CALLED_AT]).as_py() or first_call)
            writer.add(batch.drop_columns([*stages, CALLED_AT]))
            timings["write"] += time.perf_counter() - written
            progress.update(len(batch))
        written = time.perf_counter()
        writer.close()
        timings["write"] += time.perf_counter() - written
    return first_call


def _replace_bricks(written: str, out_dir: str, bricks: list[str]) -> None:
    """Each brick's partition replaced by its new files (written under the local folder ``written``):
    they go in first (new names), then its BRICK_MARKER names them, then the files the previous marker
    named go. A reader may briefly see both, never neither; a file no build wrote stays; one writer per
    brick (docs/design.md §11 (storage and outputs))."""
    for brick in bricks:
        folder = Path(written, f"brick={brick}")
        files = sorted(p for p in folder.glob("*.parquet")) if folder.is_dir() else []
        target = uris.join(out_dir, f"brick={brick}")
        marker = uris.join(target, BRICK_MARKER)
        previous = uris.read_json(marker)["files"] if uris.exists(marker) else []
        for f in files:
            write_file(uris.join(target, f.name), f.read_bytes())
        write_file(marker, uris.json_text({"files": [f.name for f in files]}).encode())
        fs, _ = uris.filesystem(target)
        for name in sorted(set(previous) - {f.name for f in files}):
            fs.rm_file(uris.filesystem(uris.join(target, name))[1])


def build_catalog(model: CatalogModel, inputs: list[str], out_dir: str, *, bricks: list[str] | None = None,
                  batch_size: int = 256, top_n: int = 50, num_cpus: int | None = None) -> CatalogReport:
    """Score the cutouts of ``inputs`` (only those in ``bricks`` when given) into ``out_dir``: the whole
    catalogue (with its summary and gallery) as one dataset folder, or just the partitions of
    ``bricks``. The previous catalogue (or partition) stays whole until the new one is complete."""
    started = time.perf_counter()
    refuse_overlap(out_dir, [*inputs, model.path])
    parquet, npz = catalog_inputs(inputs)
    rows = {f: input_rows(f) for f in parquet + npz}  # parquet footers: the total and the work items, no blob read
    wanted = None if bricks is None else set(bricks)
    sidecar = load_sidecar(model.path)
    if sidecar["needs_control"]:  # its actors would fail mid-run: refused before anything is read or written
        raise CheckpointError(f"{model.path}: this model reads {sidecar['input_channels']} channels (stamp + control "
                              "stamp); a real survey galaxy has no control, so it cannot score a survey")
    timings: Counter = Counter()
    ray_started = time.perf_counter()
    with ray_session(num_cpus):
        timings["ray_start"] = time.perf_counter() - ray_started
        ray_up = time.time()
        quiet_progress()
        actors, gpus = pool_size()
        import ray.data

        items = work_items(rows)
        scored = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ScoringWorker, fn_constructor_kwargs={"model": model, "bricks": wanted, "batch_size": batch_size,
                                                  "torch_threads": 1 if not gpus else 4},
            batch_size=1, batch_format="numpy", concurrency=actors, num_gpus=gpus, num_cpus=0 if gpus else 1)
        if bricks is not None:  # the rows of other bricks in the same files are dropped: no total known
            with tempfile.TemporaryDirectory(prefix="halo-bricks-") as tmp:
                first_call = _write_partitions(scored, tmp, None, timings)
                placed = time.perf_counter()
                _replace_bricks(tmp, out_dir, bricks)
                timings["write"] += time.perf_counter() - placed
            report = _summarized(out_dir, model, bricks, top_n, inputs)
        else:  # footer row counts and one row per npz or unreadable file: the total without reading a blob
            with dataset_folder(out_dir, SUMMARY_FILE) as stage:
                first_call = _write_partitions(scored, str(stage), sum(rows.values()), timings)
                report = _summarized(str(stage), model, None, top_n, inputs)
                report.out_dir = str(stage)
                publish(report, model)
            report.out_dir = out_dir
        # start-up, apart from the steady state: the workers starting and loading the model until their first call
        timings["workers_start"] = max(0.0, first_call - ray_up)
    report.seconds = round(time.perf_counter() - started, 3)
    report.timings = {k: round(v, 3) for k, v in timings.items()}
    log.info("catalogue %s: %d rows, %d scored, refused %s, %d above the threshold, %.1f s (%s)", out_dir,
             report.rows, report.scored, dict(report.refused), report.above_threshold, report.seconds,
             ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()))
    return report


def _summarized(out_dir: str, model: CatalogModel, bricks: list[str] | None, top_n: int, inputs) -> CatalogReport:
    report = summarize(out_dir, model, bricks, top_n)
    if report.rows == 0:  # raised inside the build: the previous catalogue stays
        raise ContractError(f"{inputs}: no cutouts{'' if bricks is None else f' in bricks {sorted(bricks)}'}")
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
    gallery = write_gallery(report.top, model.path, uris.join(report.out_dir, GALLERY_DIR, f"{name}.html"),
                            title=f"halo candidates: {name if name != 'index' else 'all bricks'} (model {model.version})",
                            threshold=model.threshold)
    write_file(summary, uris.json_text(report.to_dict()).encode())  # last: the whole catalogue's marker
    return summary, gallery
