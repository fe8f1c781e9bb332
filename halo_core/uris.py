"""Local-or-S3 locations: the only module that knows about fsspec (docs/design.md §11 (storage), "paths are URIs")."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import fsspec

from halo_core.errors import BuildLockedError, StorageError


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def join(uri: str, *parts: str) -> str:
    if is_remote(uri):
        return posixpath.join(uri, *parts)
    return str(Path(uri.removeprefix("file://"), *parts))


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI such as s3://bucket/prefix."""
    return fsspec.core.url_to_fs(uri)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


@contextmanager
def _writing(uri: str) -> Iterator[None]:
    """An OSError of writing ``uri`` as a StorageError naming it (ENOSPC's own message names no file)."""
    try:
        yield
    except OSError as err:
        raise StorageError(f"{uri}: cannot write ({err.strerror or type(err).__name__})") from err


def replace_file(tmp: str, target: Path) -> None:
    """The one rename that publishes a finished local file (tests/killing.py stops commands here)."""
    os.replace(tmp, target)


@contextmanager
def atomic_file(uri: str, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """A file to stream ``uri``'s content into: all of it lands at ``uri`` when the block ends without an
    exception (a temp file beside it + one rename; one upload on S3), nothing of it otherwise."""
    remote = is_remote(uri)
    target = Path(uri.removeprefix("file://"))
    with _writing(uri):
        if not remote:
            target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=None if remote else target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            with _writing(uri):
                f.flush()
                os.fsync(f.fileno())
        with _writing(uri):
            if remote:
                fs, path = filesystem(uri)
                fs.put_file(tmp, path)
            else:
                os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it 0600; an artifact is as readable as any file
                replace_file(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(uri: str, data: bytes) -> None:
    """Write all of ``data`` or nothing: :func:`atomic_file` locally; S3 object PUTs are atomic already."""
    if is_remote(uri):
        fs, path = filesystem(uri)
        fs.pipe_file(path, data)
        return
    with atomic_file(uri) as f, _writing(uri):
        f.write(data)


def check_writable(uri: str) -> None:
    """Fail now, naming the location, when a local output directory cannot be created or written (a
    run finds out before its first epoch, not at its first checkpoint). S3 permissions show at the
    first write."""
    if is_remote(uri):
        return
    target = Path(uri.removeprefix("file://"))
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as err:
        raise StorageError(f"{uri}: cannot write there ({err.strerror or type(err).__name__})") from None


def _finite(obj: Any) -> Any:
    """NaN/inf -> None: standard JSON, and a reader sees 'not measured' rather than a number. A typed
    result (a dataclass) is written as its fields (halo_core.records reads it back)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def json_text(obj: Any) -> str:
    """Standard JSON (NaN/inf as null), indented, keys sorted."""
    return json.dumps(_finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False)


def atomic_write_json(uri: str, obj: Any) -> None:
    atomic_write_bytes(uri, json_text(obj).encode())


def find(uri: str, suffix: str) -> list[str]:
    """Every file under ``uri`` whose name ends in ``suffix``, as URIs of the same scheme, sorted. Names
    starting with ``_`` or ``.`` are a folder's bookkeeping (a fetch manifest, a temp file), not its
    data, as pyarrow's datasets read them."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    found = sorted(p for p in fs.find(path) if p.endswith(suffix) and not posixpath.basename(p).startswith(("_", ".")))
    if is_remote(uri):
        scheme = uri.split("://", 1)[0]
        return [f"{scheme}://{p}" for p in found]
    return found


def file_state(uri: str) -> tuple[str, int, str]:
    """(uri, size, modification time): enough to tell that a file was added, replaced or changed."""
    fs, path = filesystem(uri)
    info = fs.info(path)
    return uri, int(info.get("size", 0)), str(info.get("mtime", info.get("LastModified", "")))


CACHE_DIR = Path(os.environ.get("HALO_CACHE", Path.home() / ".cache" / "halo"))


def local_mirror(uri: str, marker: str) -> str:
    """A local directory holding the files under ``uri``: the path itself when local; for S3, a copy of
    its current version in $HALO_CACHE refreshed whenever the remote ``marker`` file (written last by
    its producer) changes.
    Memory-mapped shards need a local file; S3 has none."""
    if not is_remote(uri):
        return uri
    local = CACHE_DIR / hashlib.sha256(uri.encode()).hexdigest()[:16]
    version = current(uri)  # a rebuild's new version has a new marker, so the copy follows the pointer
    remote_marker = read_bytes(join(version, marker))
    if (local / marker).is_file() and (local / marker).read_bytes() == remote_marker:
        return str(local)
    shutil.rmtree(local, ignore_errors=True)
    fs, path = filesystem(version)
    fs.get(path.rstrip("/") + "/", str(local), recursive=True)  # multipart-aware, retried by botocore
    return str(local)


POINTER_FILE = "current.json"  # S3 only: names the version folder a reader uses; written last by a build


def current(uri: str) -> str:
    """The directory a reader should read for ``uri``: on S3 the version named by its pointer (when one
    exists), locally ``uri`` itself (a local build is a symlink swapped into place, halo_core.outputs)."""
    if not is_remote(uri):
        return uri
    pointer = join(uri, POINTER_FILE)
    return join(uri, read_json(pointer)["version"]) if exists(pointer) else uri


@contextmanager
def build_lock(uri: str, wait: bool = False) -> Iterator[None]:
    """An exclusive lock on building ``uri`` (a local directory): a second builder fails at once with a
    message naming the lock instead of interleaving its files with the first one's. The lock file
    stays (deleting it would race with a waiting builder); the kernel frees the lock when its holder
    exits, SIGKILL included. S3 has no lock: concurrent writers to one S3 URI outside Dagster are not
    supported (inside Dagster the dataset assets share a pool of limit 1)."""
    target = Path(uri.removeprefix("file://"))
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildLockedError(f"{uri}: another build holds {lock_path}; wait for it to finish") from None
        yield


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def content_fingerprint(files: list[str], root: str) -> str:
    """sha256 over the files' names relative to ``root`` and their bytes: never absolute paths, mtimes
    or build times, so the same data copied or rebuilt elsewhere has the same fingerprint (docs/design.md §9 (run keys))."""
    digest = hashlib.sha256()
    for uri in sorted(files):
        digest.update(uri.removeprefix(root).lstrip("/").encode() + b"\0")
        fs, inner = filesystem(uri)
        with fs.open(inner, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]
