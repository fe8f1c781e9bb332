"""Paired parquet datasets in the three upstream split layouts (docs/design.md §3 (data contract)), or one location per split.

1. split directories:   <root>/{train,val,test}/*.parquet
2. Hive partitions:     <root>/region_split={train,val,test}/*.parquet
3. a split column:      <root>/**/*.parquet carrying ``split`` or ``region_split``
4. the plan's form:     ``train_path``, ``val_path``, ``test_path`` each name one split's files
   (docs/design.md §3 (data contract) "Split paths"); every row there belongs to that split, whatever a split column says.

A dataset *source* is a root URI (layouts 1-3) or a mapping split -> URI (layout 4).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from halo_core import uris
from halo_core.errors import ContractError

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("split", "region_split")
REQUIRED_COLUMNS = {
    "stamp_npz": pa.binary(),
    "ctrl_stamp_npz": pa.binary(),
    "task_id": pa.string(),
    "brickname": pa.string(),
    "ra": pa.float64(),
    "dec": pa.float64(),
    "theta_e_arcsec": pa.float64(),
    "arc_snr": pa.float64(),
}


Source = str | Mapping[str, str]


def split_files(source: Source) -> dict[str, list[str]]:
    """Parquet files of each split. Under a root, a file found outside split folders is listed under
    every split and filtered by its split column when read."""
    if not isinstance(source, str):
        by_split = {s: uris.find(source[s], ".parquet") for s in SPLITS}
        empty = [f"{s} ({source[s]})" for s in SPLITS if not by_split[s]]
        if empty:
            raise ContractError(f"no parquet files for split(s) {', '.join(empty)}")
        return by_split
    root = source
    resolved = uris.current(root)
    files = uris.find(resolved, ".parquet")
    if not files:
        raise ContractError(f"{root}: no parquet files found; expected <root>/{{train,val,test}}/*.parquet")
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    base = _inner(resolved)
    for path in files:
        folder = split_folder(base, path)
        for s in [folder] if folder else SPLITS:
            by_split[s].append(path)
    return by_split


def _inner(uri: str) -> str:
    return uris.filesystem(uri)[1].replace("\\", "/").rstrip("/")


def split_folder(base: str, path: str) -> str | None:
    """The split named by a folder between the dataset root (``base``, its path inside its filesystem)
    and ``path``; never by a folder above the root: a dataset stored under /data/val/ is not val."""
    inner = _inner(path)
    relative = inner[len(base) + 1:] if inner.startswith(base + "/") else inner
    return next((s for p in relative.split("/")[:-1] for s in SPLITS if p in (s, f"region_split={s}")), None)


def _open_parquet(path: str, read):
    fs, inner = uris.filesystem(path)
    try:
        with fs.open(inner, "rb") as f:
            return read(f)
    except (pa.ArrowException, OSError) as err:  # truncated, zero-byte, not parquet at all
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ContractError(f"{path}: not a readable parquet file ({message})") from None


def read_parquet(path: str) -> pa.Table:
    """The whole table; a truncated or non-parquet file is a one-line ContractError naming it."""
    return _open_parquet(path, pq.read_table)


def parquet_rows(path: str) -> int:
    """Rows of a parquet file, from its footer."""
    return _open_parquet(path, lambda f: pq.ParquetFile(f).metadata.num_rows)


def parquet_batches(path: str, columns: list[str], rows: int) -> Iterator[pa.RecordBatch]:
    """``columns`` of a parquet file, ``rows`` at a time: a file far larger than memory streams."""
    fs, inner = uris.filesystem(path)
    try:
        with fs.open(inner, "rb") as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=rows, columns=columns)
    except (pa.ArrowException, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ContractError(f"{path}: not a readable parquet file ({message})") from None


def read_parquet_schema(path: str) -> pa.Schema:
    return _open_parquet(path, pq.read_schema)


def check_schema(schema: pa.Schema, source: str) -> None:
    """Required columns present with compatible types; raises ContractError naming the file."""
    missing = sorted(set(REQUIRED_COLUMNS) - set(schema.names))
    if missing:
        raise ContractError(f"{source}: missing required columns {missing}; has {sorted(schema.names)}")
    wrong = []
    for name, want in REQUIRED_COLUMNS.items():
        got = schema.field(name).type
        same_kind = (
            (pa.types.is_binary(want) and (pa.types.is_binary(got) or pa.types.is_large_binary(got)))
            or (pa.types.is_string(want) and (pa.types.is_string(got) or pa.types.is_large_string(got)))
            or (pa.types.is_floating(want) and (pa.types.is_floating(got) or pa.types.is_integer(got)))
        )
        if not same_kind:
            wrong.append(f"{name}: {got} (want {want})")
    if wrong:
        raise ContractError(f"{source}: wrong column types: {'; '.join(wrong)}")


def read_split(source: Source, split: str, files: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """Yield (file URI, table of that file's rows in ``split``) for every file of the split."""
    base = _inner(uris.current(source)) if isinstance(source, str) else None
    for path in files if files is not None else split_files(source)[split]:
        table = read_parquet(path)
        check_schema(table.schema, path)
        column = next((c for c in SPLIT_COLUMNS if c in table.column_names), None)
        # a file named for one split (val_path, test_path), or in that split's folder under the root
        in_folder = base is None or split_folder(base, path) == split
        if column and not in_folder:
            table = table.filter(pc.equal(table[column].cast(pa.string()), split))
        elif not in_folder:
            raise ContractError(f"{path}: not in a split folder and has no {' or '.join(SPLIT_COLUMNS)} column")
        yield path, table
