"""A survey's cutouts as the rows a scoring worker receives, whatever file they came from (docs/design.md §13
(survey path)). These functions run in Ray's read tasks, so this module imports pyarrow and nothing heavier:
a read worker that imported the catalogue's module would load torch first (seconds of every start-up)."""

from __future__ import annotations

import pyarrow as pa

UNKNOWN_BRICK = "unknown"  # a cutout without a brickname still gets a partition
PARQUET_COLUMNS = ["stamp_npz", "task_id", "ra", "dec", "brickname"]
# What a scoring worker receives, whatever the file it came from: the blob and what is known before it is
# decoded (an npz holds its id, position and brick inside; a file that could not be read comes as a refused row).
RAW_SCHEMA = pa.schema([("blob", pa.binary()), ("format", pa.string()), ("task_id", pa.string()),
                        ("ra", pa.float64()), ("dec", pa.float64()), ("brickname", pa.string()),
                        ("source", pa.string()), ("status", pa.string())])


def brick_name(value) -> str:
    return str(value) if value not in (None, "") else UNKNOWN_BRICK


def raw_parquet(batch: pa.Table, bricks, scheme: str) -> pa.Table:
    """Paired-parquet rows as RAW_SCHEMA rows; rows of bricks not asked for are dropped before any decoding."""
    if bricks is not None:
        batch = batch.filter(pa.array([brick_name(b) in bricks for b in batch["brickname"].to_pylist()], pa.bool_()))
    n = len(batch)
    return pa.table({"blob": batch["stamp_npz"].cast(pa.binary()), "format": pa.array(["parquet"] * n, pa.string()),
                     "task_id": batch["task_id"].cast(pa.string()), "ra": batch["ra"].cast(pa.float64()),
                     "dec": batch["dec"].cast(pa.float64()), "brickname": batch["brickname"].cast(pa.string()),
                     "source": pa.array([scheme + p for p in batch["path"].to_pylist()], pa.string()),
                     "status": pa.nulls(n, pa.string())}, schema=RAW_SCHEMA)


def raw_npz(batch: pa.Table, scheme: str) -> pa.Table:
    """Single-cutout npz files as RAW_SCHEMA rows: their id, position and brick are inside the file."""
    n = len(batch)
    return pa.table({"blob": batch["bytes"].cast(pa.binary()), "format": pa.array(["npz"] * n, pa.string()),
                     **{c: pa.nulls(n, RAW_SCHEMA.field(c).type) for c in ("task_id", "ra", "dec", "brickname")},
                     "source": pa.array([scheme + p for p in batch["path"].to_pylist()], pa.string()),
                     "status": pa.nulls(n, pa.string())}, schema=RAW_SCHEMA)
