"""The filtered dataset: excluded bricks dropped, quality cuts, bad rows quarantined and counted,
pairs preprocessed once and written as shards (docs/design.md §2 `filtered_dataset`, §7 (reliability))."""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from halo_core import uris
from halo_core.config import BLOB_COLUMNS
from halo_core.data.graded import graded_negatives
from halo_core.data.preprocess import PreprocessSpec, preprocess, preprocess_with_core
from halo_core.data.reader import SPLITS, Source, parquet_rows, read_split, split_files
from halo_core.data.shards import MANIFEST_FILE, ShardWriter, fingerprint_shards
from halo_core.data.splits import SplitReport, split_report
from halo_core.data.stamps import BANDS, decode_stamp
from halo_core.errors import ContractError, StampDecodeError
from halo_core.outputs import dataset_folder
from halo_core.progress import Progress

log = logging.getLogger(__name__)
CHUNK_ROWS = 512


@dataclass
class FilterReport:
    """What happened to the rows of one split; every dropped row is in ``counts`` under a reason."""

    split: str
    rows_in: int = 0
    rows_kept: int = 0
    counts: Counter = field(default_factory=Counter)  # reason -> rows dropped
    quarantined: list[dict] = field(default_factory=list)  # {task_id, source, reason, detail}
    arc_snr_zero_kept: int = 0  # masked arcs: kept for the "behave like negatives" diagnostic
    identical_pairs_kept: int = 0  # stamp == control
    identical_pairs_with_arc: int = 0  # stamp == control although arc_snr > 0: a failed injection
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["counts"] = dict(self.counts)
        return d


@dataclass
class DatasetReport:
    out_dir: str
    preprocess: PreprocessSpec
    splits: dict[str, FilterReport]
    integrity: SplitReport
    excluded_bricks: tuple[str, ...]
    seconds: float
    data_fingerprint: str  # content hash of the shards + PreprocessSpec (docs/design.md §9 (run keys))
    graded_negatives: dict = field(default_factory=dict)  # graded "not a lens" added to train / dropped, by reason

    def to_dict(self) -> dict:
        return {
            "out_dir": self.out_dir,
            "preprocess": self.preprocess.to_dict(),
            "splits": {s: r.to_dict() for s, r in self.splits.items()},
            "integrity": self.integrity.to_dict(),
            "excluded_bricks": list(self.excluded_bricks),
            "seconds": self.seconds,
            "data_fingerprint": self.data_fingerprint,
            "graded_negatives": self.graded_negatives,
        }


def _cut_mask(table: pa.Table, column: str, limit: float) -> np.ndarray:
    if column not in table.column_names:
        return np.zeros(table.num_rows, bool)
    values = table[column].to_numpy(zero_copy_only=False).astype(float)
    return values > limit  # NULL (NaN) passes: the column is optional provenance


def _filter_file(table: pa.Table, source: str, cfg, report: FilterReport, seen_ids: set[str]):
    """Decode and vet one file's rows; returns (stamps, controls, meta) of the rows kept."""
    n = table.num_rows
    report.rows_in += n
    task_ids = table["task_id"].to_pylist()
    drop = np.zeros(n, dtype=object)  # reason per row, 0 = keep
    bricks = np.asarray(table["brickname"].to_pylist(), dtype=object)
    drop[np.isin(bricks, list(cfg.exclude_bricks))] = "excluded_brick"
    for column, limit in (("bad_pixel_frac", cfg.quality_cuts.max_bad_pixel_frac),
                          ("wise_brightmask_frac", cfg.quality_cuts.max_wise_brightmask_frac)):
        drop[(drop == 0) & _cut_mask(table, column, limit)] = column
    stamps, controls, keep_rows = [], [], []
    blobs = {c: table[c].to_pylist() for c in BLOB_COLUMNS}
    keys = cfg.input_keys.npz_keys()
    for i, task_id in enumerate(task_ids):
        if drop[i]:
            report.counts[drop[i]] += 1
            continue
        try:
            if task_id is None or task_id in seen_ids:
                raise StampDecodeError(f"{source} row {i}: task_id {task_id!r} is missing or repeated", "duplicate_task_id")
            pair = [decode_stamp(blobs[c][i], source=source, task_id=task_id, column=c, keys=keys[c])
                    for c in BLOB_COLUMNS]
            bad = [c for c, img in zip(BLOB_COLUMNS, pair) if not np.isfinite(img).all()]
            if bad:
                raise StampDecodeError(f"{source} task_id={task_id} {bad}: non-finite pixels", "nonfinite_pixels")
        except StampDecodeError as err:
            report.counts[err.reason] += 1
            report.quarantined.append({"task_id": task_id, "source": source, "reason": err.reason, "detail": str(err)})
            continue
        seen_ids.add(task_id)
        stamps.append(pair[0])
        controls.append(pair[1])
        keep_rows.append(i)
    meta = table.drop_columns(list(BLOB_COLUMNS)).take(pa.array(keep_rows, pa.int64())).to_pandas()
    meta["source_file"] = source
    return stamps, controls, meta


def build_filtered_dataset(cfg, source_uri: Source, out_dir: str, *, on_ray: bool | None = None,
                           num_cpus: int | None = None, require_disjoint: bool = False) -> DatasetReport:
    """Read the paired dataset at ``source_uri`` (a root, or split -> location) and write the filtered,
    preprocessed shards to ``out_dir`` (staged: the previous dataset there stays until this one is
    complete); on Ray (``on_ray``, default ``cfg.filter_on_ray`` where Ray can win: single_process_reason)
    with ``num_cpus`` for a local Ray. ``require_disjoint``: splits that share a brick or an LRG fail the
    build (ContractError) and the previous dataset stays; without it the leak is recorded in the manifest
    for the blocking split_integrity check to show."""
    from halo_core.ray_runtime import ray_session

    inputs = [source_uri] if isinstance(source_uri, str) else list(source_uri.values())
    if on_ray is None:  # the config's choice, unless Ray cannot win here; a caller's explicit choice stands
        why = single_process_reason(source_uri, num_cpus) if cfg.filter_on_ray else None
        if why:
            log.info("filtering in this process, not on Ray: %s", why)
        on_ray = cfg.filter_on_ray and not why
    with dataset_folder(out_dir, MANIFEST_FILE, inputs) as out, ray_session(num_cpus) if on_ray else nullcontext():
        report = _build(cfg, source_uri, out, out_dir, on_ray)
        if require_disjoint and not report.integrity.ok:
            leak = report.integrity
            bricks = {k: v[:5] for k, v in leak.shared_bricks.items() if v}
            lrgs = {k: v for k, v in leak.shared_lrgs.items() if v}
            raise ContractError(f"{source_uri}: the splits leak (shared bricks {bricks}, shared LRGs {lrgs}); "
                                f"nothing written: {out_dir} keeps its previous dataset")
        return report


# When a local Ray cannot beat one process (measured on 2 cores: Ray 1 CPU 107 rows/s, 2 CPUs 97, one
# process 188): this process writes every shard and pays for each task's results coming back, so fewer
# than RAY_MIN_CPUS cores leave at most one filtering core beside it; and Ray's start (~2-3 s) is more
# than a tenth of a build of fewer than RAY_MIN_ROWS rows.
RAY_MIN_CPUS = 3
RAY_MIN_ROWS = 20_000


def single_process_reason(source_uri: Source, num_cpus: int | None) -> str | None:
    """Why a build should not start a local Ray (None: Ray may win). A Ray cluster (HALO_RAY_ADDRESS)
    brings its own cores, so it is always used."""
    import os

    from halo_core.ray_runtime import RAY_ADDRESS_ENV, step_cpus

    if os.environ.get(RAY_ADDRESS_ENV):
        return None
    cpus = num_cpus or step_cpus()
    if cpus < RAY_MIN_CPUS:
        return f"{cpus} CPU(s) here; a local Ray needs at least {RAY_MIN_CPUS} to beat one process"
    rows = 0
    for files in split_files(source_uri).values():
        for f in files:
            rows += parquet_rows(f)
            if rows >= RAY_MIN_ROWS:
                return None
    return f"{rows} rows; below {RAY_MIN_ROWS} Ray's start-up costs more than it saves"


def _filter_source(cfg, spec: PreprocessSpec, source_uri: Source, split: str, source: str, seen_ids: set[str]):
    """One file, decoded, vetted and preprocessed chunk by chunk: (its report, its chunks, the task_ids
    that reached the duplicate test). The only state it shares with other files is ``seen_ids``."""
    report = FilterReport(split)
    chunks, checked = [], []
    for _, table in read_split(source_uri, split, [source]):
        for offset in range(0, table.num_rows, CHUNK_ROWS):
            part = table.slice(offset, CHUNK_ROWS)
            quarantined = len(report.quarantined)
            stamps, controls, meta = _filter_file(part, source, cfg, report, seen_ids)
            checked += [q["task_id"] for q in report.quarantined[quarantined:]] + meta["task_id"].tolist()
            if not stamps:
                continue
            stamps, controls = np.stack(stamps), np.stack(controls)
            identical = (stamps == controls).all(axis=(1, 2, 3))
            report.identical_pairs_kept += int(identical.sum())
            report.identical_pairs_with_arc += int((identical & (meta["arc_snr"].to_numpy(float) > 0)).sum())
            # the LRG's own core brightness, for the spread the core-perturbation test spans
            prepared, core = preprocess_with_core(controls, spec)
            meta = meta.assign(**{f"ctrl_core_flux_sigma_{b}": core[:, i] for i, b in enumerate(BANDS)})
            chunks.append((preprocess(stamps, spec), preprocess(controls, spec) if prepared is None else prepared, meta))
    return report, chunks, checked


def _filtered_sources(cfg, spec, source_uri: Source, split: str, files: list[str], seen_ids: set[str], on_ray: bool):
    """Yield _filter_source's result for each file in order. On Ray the files are
    filtered in Ray tasks (a bounded window of them at a time), each with an empty ``seen_ids``; a file
    whose task_ids meet an earlier file's is redone here with the real set, so every decision, count
    and byte written is the single-process build's."""
    if not on_ray:
        for source in files:
            yield source, _filter_source(cfg, spec, source_uri, split, source, seen_ids)
        return
    import ray

    task = ray.remote(_filter_source)
    # enough to keep every core busy, no more (an autoscaling cluster may start with no worker CPUs)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 0)))
    pending = [task.remote(cfg, spec, source_uri, split, f, set()) for f in files[:window]]
    for i, source in enumerate(files):
        result = ray.get(pending.pop(0))
        if i + window < len(files):
            pending.append(task.remote(cfg, spec, source_uri, split, files[i + window], set()))
        if seen_ids.intersection(result[2]):
            result = _filter_source(cfg, spec, source_uri, split, source, seen_ids)
        else:
            seen_ids.update(t for _, _, meta in result[1] for t in meta["task_id"])
        yield source, result


def _add_graded_negatives(cfg, spec: PreprocessSpec, out: Path, metas: dict, report: FilterReport) -> dict:
    """Append the galaxies graded "not a lens" to the train shards (stamp = control = the galaxy), once
    the val and test bricks are known: a graded galaxy in one of them is dropped and counted."""
    held_out = {str(b) for s in SPLITS if s != "train" for b in metas[s]["brickname"]}
    graded = graded_negatives(cfg.graded_negatives_path, cfg.input_keys, held_out,
                              cfg.real_sky.nonlens_min_separation_arcsec)
    if len(graded.meta):
        prepared, core = preprocess_with_core(graded.stamps, spec)
        x = preprocess(graded.stamps, spec) if prepared is None else prepared
        meta = graded.meta.assign(**{f"ctrl_core_flux_sigma_{b}": core[:, i] for i, b in enumerate(BANDS)})
        writer = ShardWriter(out / "train", append=True)
        writer.append(x, x, meta)
        writer.close()
        report.rows_kept = writer.rows
        metas["train"] = pd.read_parquet(out / "train" / "meta.parquet", columns=["arc_snr", "brickname", "ra", "dec"])
    log.info("graded negatives from %s: %s", cfg.graded_negatives_path, graded.counts)
    return graded.counts


def _build(cfg, source_uri: Source, out: Path, out_dir: str, on_ray: bool) -> DatasetReport:
    start = time.perf_counter()
    spec = PreprocessSpec.from_config(cfg)
    files = split_files(source_uri)
    empty = [s for s in SPLITS if not files[s]]
    if empty:
        raise ContractError(f"{source_uri}: split(s) {empty} have no parquet files")
    reports: dict[str, FilterReport] = {}
    metas: dict[str, pd.DataFrame] = {}
    seen_ids: set[str] = set()
    progress = Progress(sum(len(f) for f in files.values()), "halo filter", "files")
    for split in SPLITS:
        report = FilterReport(split)
        writer = ShardWriter(out / split)
        for source, (part, chunks, _) in _filtered_sources(cfg, spec, source_uri, split, files[split], seen_ids, on_ray):
            progress.update(1)
            report.sources.append(source)
            report.rows_in += part.rows_in
            report.counts.update(part.counts)
            report.quarantined += part.quarantined
            report.identical_pairs_kept += part.identical_pairs_kept
            report.identical_pairs_with_arc += part.identical_pairs_with_arc
            for stamps, controls, meta in chunks:
                writer.append(stamps, controls, meta)
        writer.close()
        report.rows_kept = writer.rows
        if report.rows_kept == 0:
            raise ContractError(
                f"{source_uri}: split {split!r} is empty after filtering ({report.rows_in} rows in; "
                f"dropped {dict(report.counts)})"
            )
        metas[split] = pd.read_parquet(out / split / "meta.parquet", columns=["arc_snr", "brickname", "ra", "dec"])
        report.arc_snr_zero_kept = int((metas[split]["arc_snr"] == 0).sum())
        reports[split] = report
        log.info("filtered %s: %d of %d rows kept, dropped %s", split, report.rows_kept, report.rows_in, dict(report.counts))
    progress.close()
    graded = _add_graded_negatives(cfg, spec, out, metas, reports["train"]) if cfg.graded_negatives_path else {}
    result = DatasetReport(
        out_dir=out_dir, preprocess=spec, splits=reports, integrity=split_report(metas),
        excluded_bricks=tuple(cfg.exclude_bricks), seconds=time.perf_counter() - start,
        data_fingerprint=fingerprint_shards(out, SPLITS, spec), graded_negatives=graded,
    )
    manifest = {**result.to_dict(), "config_hash": cfg.config_hash(), "source_uri": dict(source_uri) if not isinstance(source_uri, str) else source_uri}
    uris.atomic_write_json(str(out / MANIFEST_FILE), manifest)  # written last: its presence means complete
    return result
