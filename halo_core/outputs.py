"""The one way to write an output (docs/design.md §11 (storage and outputs)): every writer declares one of three kinds and
uses that kind's primitive here.

- *dataset folder* (:func:`dataset_folder`): a set of files that is only meaningful whole (a paired or
  filtered dataset, a report folder, a catalogue). Built into a hidden sibling version folder under a
  lock; locally ``out`` is a symlink swapped to the new version by one ``rename``, so a reader sees the
  old dataset or the new one, never none; on S3 ``out/current.json`` names the version (readers use
  :func:`halo_core.uris.current`).
- *file* (:func:`write_file`, or :func:`streamed_file` for content too big to hold): one file, temp
  file + rename (one PUT on S3).
- *resumable folder* (:func:`resumable_folder` + :func:`write_item`): a folder whose items are written
  one at a time, each atomically, in place (a training run's checkpoints, fetched cutouts); a rerun
  continues from the items already there.

For every kind: an output that is, contains or lies inside any of its inputs is refused, symlinks
resolved (:func:`refuse_overlap`; the model registry, which reads and moves its own pointer, is the one
exception); nothing the writer did not write is deleted (a dataset folder records the files it wrote
in ``.halo_written.json`` and a rebuild removes only those, carrying other files over); name patterns
are matched exactly, never globbed.

S3 has no lock and no conditional rename here: one writer per prefix. Inside Dagster the dataset assets
share a pool of limit 1; outside it, do not point two builds at one S3 URI at once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from halo_core import uris
from halo_core.errors import BuildLockedError, StorageError

log = logging.getLogger(__name__)

DATASET, FILE, RESUMABLE = "dataset folder", "file", "resumable folder"
KINDS = (DATASET, FILE, RESUMABLE)
WRITTEN = ".halo_written.json"  # a dataset folder's own files: a rebuild deletes these and nothing else


def _resolved(uri: str) -> str:
    if uris.is_remote(uri):
        return uri.rstrip("/")
    return os.path.realpath(uri.removeprefix("file://"))


def refuse_overlap(out: str, inputs: Iterable[str | None]) -> None:
    """StorageError when ``out`` is, contains or lies inside one of ``inputs`` (empty ones skipped);
    local paths are compared after resolving symlinks, S3 URIs as prefixes."""
    target = _resolved(out)
    for source in inputs:
        if not source:
            continue
        other = _resolved(source)
        sep = "/" if uris.is_remote(out) or uris.is_remote(source) else os.sep
        if target == other:
            why = "is the input"
        elif target.startswith(other.rstrip(sep) + sep):
            why = "lies inside the input"
        elif other.startswith(target.rstrip(sep) + sep):
            why = "contains the input"
        else:
            continue
        raise StorageError(f"{out}: the output {why} {source}; writing there would replace or read back "
                           "what this command reads (choose an --out outside every input)")


# -- file -----------------------------------------------------------------------------------------

def write_file(uri: str, data: bytes, inputs: Iterable[str | None] = ()) -> str:
    """All of ``data`` at ``uri`` or nothing (temp file + rename; one PUT on S3); returns ``uri``."""
    refuse_overlap(uri, inputs)
    uris.atomic_write_bytes(uri, data)
    return uri


@contextmanager
def streamed_file(uri: str, mode: str = "w", inputs: Iterable[str | None] = (), **open_kwargs) -> Iterator[IO]:
    """:func:`write_file` of content written piece by piece into the yielded file: it lands at ``uri``
    whole when the block ends without an exception, and nothing of it otherwise."""
    refuse_overlap(uri, inputs)
    with uris.atomic_file(uri, mode, **open_kwargs) as f:
        yield f


def write_json(uri: str, obj, inputs: Iterable[str | None] = ()) -> str:
    """:func:`write_file` of standard JSON (NaN as null)."""
    return write_file(uri, uris.json_text(obj).encode(), inputs)


# -- resumable folder -----------------------------------------------------------------------------

def resumable_folder(uri: str, inputs: Iterable[str | None] = ()) -> str:
    """``uri`` checked as the home of a resumable folder: not overlapping ``inputs`` and writable
    (a run finds out before its first item, not at it); returns ``uri``."""
    refuse_overlap(uri, inputs)
    uris.check_writable(uri)
    return uri


def _item_path(folder: str, name: str) -> str:
    parts = PurePosixPath(name).parts
    if not name or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
        raise StorageError(f"{folder}: item name {name!r} must be a relative path inside the folder")
    return uris.join(folder, *parts)


def write_item(folder: str, name: str, data: bytes) -> str:
    """One item of a resumable folder, written whole or not at all, in place; returns its URI. A
    killed writer leaves the items it finished and at most a hidden temp file."""
    uri = _item_path(folder, name)
    uris.atomic_write_bytes(uri, data)
    return uri


def write_json_item(folder: str, name: str, obj) -> str:
    return write_item(folder, name, uris.json_text(obj).encode())


def item_exists(folder: str, name: str) -> bool:
    return uris.exists(_item_path(folder, name))


# -- dataset folder -------------------------------------------------------------------------------

def _version_name() -> str:
    return f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def _is_own_version(target: Path, path: Path) -> bool:
    """True for a hidden version folder of ``target`` (exact name match: ``--out 'o*'`` matches no other
    build's folders)."""
    pattern = rf"\.{re.escape(target.name)}\.v-\d{{8}}T\d{{6}}-[0-9a-f]{{8}}"
    return path.parent == target.parent and re.fullmatch(pattern, path.name) is not None


def _own_versions(target: Path) -> list[Path]:
    return [p for p in target.parent.iterdir() if _is_own_version(target, p) and p.is_dir() and not p.is_symlink()]


def _record(folder: Path) -> None:
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    uris.atomic_write_json(str(folder / WRITTEN), {"files": [*files, WRITTEN]})


def _written(folder: Path) -> set[str] | None:
    try:
        return set(json.loads((folder / WRITTEN).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _carry_foreign(old: Path, new: Path) -> list[str]:
    """Move the files of ``old`` its build did not write into ``new`` at the same place; those whose
    place the new build took stay in ``old``. Returns the ones that stayed."""
    written = _written(old) or set()
    stayed = []
    for path in sorted(p for p in old.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(old).as_posix()
        if rel in written:
            continue
        dest = new / rel
        if dest.exists() or dest.is_symlink():
            stayed.append(rel)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    return stayed


def _remove_written(folder: Path) -> None:
    """Delete the files ``folder``'s build wrote, then its empty directories; anything else stays."""
    written = _written(folder)
    if written is None:
        return
    for rel in sorted(written, key=lambda r: r != WRITTEN):  # the record last: a killed cleanup can redo it
        (folder / rel).unlink(missing_ok=True)
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:  # renamed out of the build's names, so no later build takes it for its own
        kept = folder.with_name(folder.name.replace(".v-", ".kept-", 1))
        os.replace(folder, kept)
        log.warning("%s: kept, it holds files no build wrote", kept)


def _point(target: Path, version: Path) -> None:
    """Make ``target`` a symlink to ``version`` with one rename (the sibling link is relative, so the
    parent folder can move)."""
    link = target.parent / f".{target.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(version.name, link)
    try:
        os.replace(link, target)
    except BaseException:
        link.unlink(missing_ok=True)
        raise


@contextmanager
def dataset_folder(out: str, marker: str, inputs: Iterable[str | None] = ()) -> Iterator[Path]:
    """Yield an empty local folder to build a dataset in; it becomes ``out`` only when the block ends
    without an exception, and ``marker`` (written last by the build) must be in it by then. A failed or
    killed build leaves the previous dataset at ``out`` whole. ``out`` must not overlap ``inputs``.

    A non-empty ``out`` that holds no ``marker`` is not a build's, and is refused, never replaced."""
    refuse_overlap(out, inputs)
    if uris.is_remote(out):
        yield from _remote_dataset(out, marker)
        return
    target = Path(os.path.abspath(out.removeprefix("file://")))  # `--out .` or `out/` name their folder
    with uris.build_lock(str(target)):
        current = Path(os.path.realpath(target)) if target.exists() else None
        if target.is_symlink() and not _is_own_version(target, Path(os.path.realpath(target))):
            raise BuildLockedError(f"{out}: a symlink to {os.path.realpath(target)}, not to a build of {target.name}; "
                                   "refusing to replace it (choose an empty or new --out)")
        if current is not None and not target.is_symlink() and any(target.iterdir()) \
                and not (target / marker).is_file():
            raise BuildLockedError(f"{out}: exists, is not empty and holds no {marker}; refusing to replace "
                                   "a folder this build did not write (choose an empty or new --out)")
        for stale in _own_versions(target):  # versions killed builds left; we hold the lock
            if stale != current:
                shutil.rmtree(stale, ignore_errors=True)
        version = target.parent / f".{target.name}.{_version_name()}"
        version.mkdir()
        try:
            yield version
            if not (version / marker).is_file():
                raise StorageError(f"{out}: the build wrote no {marker}; the previous dataset stays")
            _record(version)
            os.chmod(version, 0o777 & ~uris.umask())
            # an older halo's build has no record of its files: nothing of it is carried over
            stayed = _carry_foreign(current, version) if current is not None and _written(current) else []
            if target.is_symlink() or not target.exists():
                _point(target, version)
            else:  # a real folder (an empty --out, or a build of an older halo): once, two renames
                aside = target.parent / f".{target.name}.{_version_name()}"
                os.replace(target, aside)
                _point(target, version)
                current = aside
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
        if current is not None and current != version:
            if stayed:
                log.warning("%s: %d file(s) no build wrote were kept in %s (the new build has files of the "
                            "same names), e.g. %s", out, len(stayed), current, stayed[0])
            if _written(current) is None:  # an older halo's build: it held the marker, all of it was built
                _record(current)
            _remove_written(current)


def write_dataset(out: str, files: Mapping[str, bytes], marker: str, inputs: Iterable[str | None] = ()) -> str:
    """A dataset folder holding exactly ``files`` (relative name -> bytes; ``marker`` among them, written
    last): a report folder is replaced whole or not at all. Returns ``out``."""
    if marker not in files:
        raise ValueError(f"write_dataset: {marker} is not among the files")
    with dataset_folder(out, marker, inputs) as folder:
        for name in sorted(files, key=lambda n: n == marker):
            path = Path(_item_path(str(folder), name))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(files[name])
    return out


def _remote_dataset(uri: str, marker: str) -> Iterator[Path]:
    """S3: upload the build to a new version prefix (``marker`` last), then ``current.json`` names it,
    then the files the previous version's build wrote go."""
    fs, path = uris.filesystem(uri)
    pointer = uris.join(uri, uris.POINTER_FILE)
    previous = uris.read_json(pointer)["version"] if uris.exists(pointer) else None
    version = _version_name()
    root = f"{path.rstrip('/')}/{version}"
    with tempfile.TemporaryDirectory(prefix="halo-stage-") as tmp:
        yield Path(tmp)
        if not (Path(tmp) / marker).is_file():
            raise StorageError(f"{uri}: the build wrote no {marker}; the previous dataset stays")
        _record(Path(tmp))
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        try:
            for local in sorted(files, key=lambda p: p.name == marker):  # the marker goes up last
                fs.put_file(str(local), f"{root}/{local.relative_to(tmp).as_posix()}")
        except BaseException:
            if fs.exists(root):
                fs.rm(root, recursive=True)  # no pointer names it: nobody reads it
            raise
    uris.atomic_write_json(pointer, {"version": version})
    if previous and previous != version and re.fullmatch(r"v-\d{8}T\d{6}-[0-9a-f]{8}", previous):
        old = f"{path.rstrip('/')}/{previous}"
        try:
            written = set(json.loads(fs.cat_file(f"{old}/{WRITTEN}"))["files"])
        except (FileNotFoundError, ValueError, KeyError):
            written = None  # an older halo's version: all of it was built
        for key in fs.find(old):
            if written is None or key.removeprefix(old + "/") in written:
                fs.rm_file(key)
