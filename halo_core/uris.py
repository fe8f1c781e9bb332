"""Local-or-S3 locations: the only module that knows about fsspec (DESIGN §2, "paths are URIs")."""

from __future__ import annotations

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
from typing import Any

import fsspec


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


def atomic_write_bytes(uri: str, data: bytes) -> None:
    """Write all of ``data`` or nothing: temp file + rename locally; S3 object PUTs are atomic already."""
    if is_remote(uri):
        fs, path = filesystem(uri)
        fs.pipe_file(path, data)
        return
    target = Path(uri.removeprefix("file://"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(obj: Any) -> Any:
    """NaN/inf -> None: standard JSON, and a reader sees 'not measured' rather than a number."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
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
    """Every file under ``uri`` whose name ends in ``suffix``, as URIs of the same scheme, sorted."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    found = sorted(p for p in fs.find(path) if p.endswith(suffix))
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
    """A local directory holding the files under ``uri``: the path itself when local; for S3, a copy in
    $HALO_CACHE refreshed whenever the remote ``marker`` file (written last by its producer) changes.
    Memory-mapped shards need a local file; S3 has none."""
    if not is_remote(uri):
        return uri
    local = CACHE_DIR / hashlib.sha256(uri.encode()).hexdigest()[:16]
    remote_marker = read_bytes(join(uri, marker))
    if (local / marker).is_file() and (local / marker).read_bytes() == remote_marker:
        return str(local)
    shutil.rmtree(local, ignore_errors=True)
    fs, path = filesystem(uri)
    fs.get(path.rstrip("/") + "/", str(local), recursive=True)  # multipart-aware, retried by botocore
    return str(local)


@contextmanager
def staged_directory(uri: str, marker: str) -> Iterator[Path]:
    """Yield a local directory to build into that becomes ``uri``. Locally it is ``uri`` itself
    (emptied first); for S3 a temporary directory uploaded after the build, ``marker`` last, so a
    reader that finds the marker finds everything."""
    if not is_remote(uri):
        target = Path(uri.removeprefix("file://"))
        if target.exists():
            shutil.rmtree(target)  # a rebuild replaces the whole directory, never mixes two
        target.mkdir(parents=True)
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="halo-stage-") as tmp:
        yield Path(tmp)
        fs, path = filesystem(uri)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        for local in sorted(files, key=lambda p: p.name == marker):  # the marker goes up last
            fs.put_file(str(local), f"{path.rstrip('/')}/{local.relative_to(tmp).as_posix()}")


def content_fingerprint(files: list[str], root: str) -> str:
    """sha256 over the files' names relative to ``root`` and their bytes: never absolute paths, mtimes
    or build times, so the same data copied or rebuilt elsewhere has the same fingerprint (DESIGN §9)."""
    digest = hashlib.sha256()
    for uri in sorted(files):
        digest.update(uri.removeprefix(root).lstrip("/").encode() + b"\0")
        fs, inner = filesystem(uri)
        with fs.open(inner, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]
