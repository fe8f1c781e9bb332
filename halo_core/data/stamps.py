"""Stamp blobs of the paired dataset (docs/design.md §3 (data contract)): npz with image_g/r/z float32 (64, 64) in nanomaggies;
real survey cutouts, and the one set of rules by which every command that reads real cutouts refuses
one (docs/design.md §14 (cutouts in); :func:`refusal`, :func:`read_checked_cutout`)."""

from __future__ import annotations

import functools
import io
import math
import struct
import zipfile

import numpy as np
from zlib_ng import zlib_ng

from halo_core.errors import StampDecodeError

BANDS = ("g", "r", "z")
BAND_KEYS = tuple(f"image_{b}" for b in BANDS)
STAMP_SIZE = 64
PIXEL_SCALE_ARCSEC = 0.262
CUTOUT_KEY = "cutout"  # the second real layout: (101, 101, 3) HWC, g,r,z
CORE_PX = 10  # the central 10x10: where a lens's light is (the shortcut gates' core, docs/design.md §1 (domain) fact 3)
# A pixel brighter than this is refused: 1e5 nmgy in one pixel is a magnitude-10 source with all its
# light in that pixel, beyond any unsaturated source of a DR10 coadd; the six shared real cutouts peak
# at 1.7 nmgy. Finite but absurd values (1e30) otherwise overflow the network to a non-finite score.
MAX_ABS_PIXEL_NMGY = 1e5
REFUSED = "refused: "  # the `status` of a refused row: REFUSED + its reason


def encode_stamp(image: np.ndarray) -> bytes:
    """(3, H, W) g,r,z image -> npz blob in the upstream layout."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(band, dtype=np.float32) for k, band in zip(BAND_KEYS, image)})
    return buf.getvalue()


MAX_CUTOUT_SIDE = 512  # real cutouts are 101 px; a bigger member is refused before it is decompressed


def open_npz(data: bytes | str, where: str) -> zipfile.ZipFile:
    """The zip archive of an npz blob (bytes) or file (path); anything else is a ``corrupt_npz``."""
    try:
        return zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise StampDecodeError(f"{where}: not an npz archive ({err})", "corrupt_npz") from None


def npz_names(archive: zipfile.ZipFile) -> list[str]:
    return sorted(n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy"))


NPY_MAGIC = b"\x93NUMPY"
HEADER_LENGTH_BYTES = {(1, 0): 2, (2, 0): 4}  # the npy versions read here; 3.0 (utf-8 field names) is refused


@functools.lru_cache(maxsize=256)
def _parse_header(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """numpy's own header parser (a Python literal), once per distinct header: a survey's members share
    a handful, and parsing each one again cost a third of the decode."""
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def _read_header(f, name: str, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of an npy member from its header; ``f`` is left at the data."""
    try:
        magic = f.read(8)
        version = tuple(magic[6:8])
        if magic[:6] != NPY_MAGIC or len(magic) < 8:
            raise ValueError("not an npy member")
        if version not in HEADER_LENGTH_BYTES:
            raise StampDecodeError(f"{where}: {name}: npy format {version} not supported", "corrupt_npz")
        length = f.read(HEADER_LENGTH_BYTES[version])
        header = f.read(int.from_bytes(length, "little"))
        shape, fortran, dtype = _parse_header(magic + length + header)
    except StampDecodeError:
        raise
    except Exception as err:  # zlib/zip/format errors all mean the same thing to the caller: corrupt blob
        raise StampDecodeError(f"{where}: corrupt npz ({type(err).__name__}: {err})", "corrupt_npz") from None
    if dtype.hasobject:
        raise StampDecodeError(f"{where}: {name} holds pickled Python objects; never unpickled", "pickled_object")
    return shape, fortran, dtype


def member_header(archive: zipfile.ZipFile, name: str, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of one npz member, from its npy header alone: nothing else is decompressed."""
    try:
        f = archive.open(f"{name}.npy")
    except Exception as err:
        raise StampDecodeError(f"{where}: corrupt npz ({type(err).__name__}: {err})", "corrupt_npz") from None
    with f:
        shape, _, dtype = _read_header(f, name, where)
    return shape, dtype


def _check_member(name: str, where: str, shape: tuple[int, ...], dtype: np.dtype, max_shape: tuple[int, ...]) -> None:
    if dtype.kind != "f":  # integer counts are not nanomaggies: a different product, never rescaled silently
        raise StampDecodeError(f"{where}: {name} has dtype {dtype}, want floating-point nanomaggies", "bad_dtype")
    if len(shape) != len(max_shape) or any(n > m for n, m in zip(shape, max_shape)):
        raise StampDecodeError(f"{where}: {name} shape {shape}, want at most {max_shape}", "bad_shape")


# an npy header is at most 64 KiB (format 1.0's 2-byte length; 2.0 headers that long are refused anyway)
MAX_NPY_HEADER_BYTES = 8 + 4 + 65_535


LOCAL_FILE_HEADER = struct.Struct("<4s2B4HL2L2H")  # the zip format's local file header (zipfile's own layout)
LOCAL_FILE_SIGNATURE = b"PK\x03\x04"


def member_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """What ``archive.read(info)`` returns for the stored or deflated members numpy writes, in a few calls:
    zipfile's streaming reader spends more Python per 16 KB band than its inflate takes, and inflates with
    zlib, which zlib-ng does ~1.3x faster (decode was 40 % of the filter). zipfile parsed the central
    directory; here the local header must name the same member, the data is inflated in one call
    bounded by the declared size, and its size and CRC are checked. Anything else raises ValueError."""
    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{info.filename}: compression {info.compress_type}, flags {info.flag_bits:#x}; "
                         "npz members are stored or deflated, unencrypted")
    if info.compress_size > info.file_size + info.file_size // 100 + 64:  # more than deflate's worst case
        raise ValueError(f"{info.filename}: {info.compress_size} compressed bytes for {info.file_size}")
    fp = archive.fp
    fp.seek(info.header_offset)
    signature, *_, name_length, extra_length = LOCAL_FILE_HEADER.unpack(fp.read(LOCAL_FILE_HEADER.size))
    name = fp.read(name_length)
    if signature != LOCAL_FILE_SIGNATURE or name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800
                                                                             else "cp437"):
        raise ValueError(f"{info.filename}: the local header does not match the central directory")
    fp.seek(extra_length, io.SEEK_CUR)
    data = fp.read(info.compress_size)
    if info.compress_type == zipfile.ZIP_DEFLATED:
        inflate = zlib_ng.decompressobj(-zlib_ng.MAX_WBITS)
        data = inflate.decompress(data, info.file_size + 1)  # one byte more than declared: a longer stream fails
        if not inflate.eof:
            raise ValueError(f"{info.filename}: the deflate stream does not end where declared")
    if len(data) != info.file_size or zlib_ng.crc32(data) != info.CRC:
        raise ValueError(f"{info.filename}: {len(data)} bytes, CRC {zlib_ng.crc32(data):#x}; the directory "
                         f"declares {info.file_size}, {info.CRC:#x}")
    return data


def read_member(archive: zipfile.ZipFile, name: str, where: str, max_shape: tuple[int, ...]) -> np.ndarray:
    """One numeric array of an npz archive. A member whose declared size exceeds the largest array
    ``max_shape`` allows (a decompression bomb: 8000x8000 zeros compress to 0.5 MB) has only its header
    read, for the refusal; any other is decompressed in one call (member_bytes: bounded by the declared
    size, its CRC checked) and its header checked before it becomes an array: a pickled object or a band
    of strings is never unpickled or rescaled."""
    try:
        info = archive.getinfo(f"{name}.npy")
        if info.file_size > MAX_NPY_HEADER_BYTES + math.prod(max_shape) * 8:  # float64's 8 bytes, the widest kept
            shape, dtype = member_header(archive, name, where)
            _check_member(name, where, shape, dtype, max_shape)
            raise StampDecodeError(f"{where}: {name} declares {info.file_size} bytes for shape {shape}", "corrupt_npz")
        raw = member_bytes(archive, info)
    except StampDecodeError:
        raise
    except Exception as err:
        raise StampDecodeError(f"{where}: corrupt npz ({type(err).__name__}: {err})", "corrupt_npz") from None
    f = io.BytesIO(raw)
    shape, fortran, dtype = _read_header(f, name, where)
    _check_member(name, where, shape, dtype, max_shape)
    count, offset = math.prod(shape), f.tell()
    if len(raw) - offset != count * dtype.itemsize:
        raise StampDecodeError(f"{where}: corrupt npz ({name}: {len(raw) - offset} of {count * dtype.itemsize} "
                               "data bytes)", "corrupt_npz")
    return np.frombuffer(raw, dtype, count, offset).reshape(shape, order="F" if fortran else "C")


def decode_stamp(blob: bytes, *, source: str, task_id: str, column: str, keys=BAND_KEYS) -> np.ndarray:
    """npz blob -> (3, 64, 64) float32; raises StampDecodeError naming file, row and column."""
    where = f"{source} task_id={task_id} {column}"
    if blob is None:
        raise StampDecodeError(f"{where}: blob is NULL", "null_blob")
    with open_npz(blob, where) as archive:
        names = npz_names(archive)
        missing = [k for k in keys if k not in names]
        if missing:
            raise StampDecodeError(f"{where}: no {missing}; has {names}", "missing_band")
        bands = [read_member(archive, k, where, (STAMP_SIZE, STAMP_SIZE)) for k in keys]
    shapes = {b.shape for b in bands}
    if shapes != {(STAMP_SIZE, STAMP_SIZE)}:
        raise StampDecodeError(f"{where}: band shapes {sorted(shapes)}, want ({STAMP_SIZE}, {STAMP_SIZE})", "bad_shape")
    return np.stack(bands).astype(np.float32, copy=False)


def read_cutout(data: bytes | str, where: str | None = None) -> tuple[np.ndarray, dict]:
    """A real survey cutout (npz bytes or a file path; ``cutout`` (H, W, 3) HWC g,r,z) -> the checked
    float32 cutout and its scalar ``meta_*`` entries, every member's header read before its data."""
    where = where or str(data)
    with open_npz(data, where) as archive:
        names = npz_names(archive)
        if CUTOUT_KEY not in names:
            raise StampDecodeError(f"{where}: no {CUTOUT_KEY!r} array; has {names[:8]}", "missing_band")
        cutout = read_member(archive, CUTOUT_KEY, where, (MAX_CUTOUT_SIDE, MAX_CUTOUT_SIDE, len(BANDS)))
        meta = _scalar_meta(archive, names, where)
    if cutout.shape[2] != len(BANDS) or min(cutout.shape[:2]) < STAMP_SIZE:
        raise StampDecodeError(f"{where}: cutout shape {cutout.shape}, want (H >= 64, W >= 64, 3)", "bad_shape")
    return cutout.astype(np.float32), meta


def _scalar_meta(archive, names: list[str], where: str) -> dict:
    meta = {}
    for name in (n for n in names if n.startswith("meta_")):
        shape, dtype = member_header(archive, name, where)
        if shape == () and dtype.itemsize <= 1024:  # scalars (numbers, short strings) only
            with archive.open(f"{name}.npy") as f:
                meta[name.removeprefix("meta_")] = np.lib.format.read_array(f, allow_pickle=False).item()
    return meta


def read_cutout_meta(data: bytes | str, where: str | None = None) -> dict:
    """A cutout's scalar ``meta_*`` entries alone: its pixels are never decompressed."""
    where = where or str(data)
    with open_npz(data, where) as archive:
        return _scalar_meta(archive, npz_names(archive), where)


def central_stamp(cutout: np.ndarray) -> np.ndarray:
    """(H, W, 3) HWC cutout -> its central (3, 64, 64) stamp: the galaxy stays at the stamp centre
    (rows/cols 18..81 of a 101x101 cutout)."""
    top, left = (cutout.shape[0] - STAMP_SIZE) // 2, (cutout.shape[1] - STAMP_SIZE) // 2
    return cutout[top:top + STAMP_SIZE, left:left + STAMP_SIZE].transpose(2, 0, 1).astype(np.float32)


def decode_cutout(data: bytes | str, where: str | None = None) -> tuple[np.ndarray, dict]:
    """A real survey cutout -> its central (3, 64, 64) stamp and its scalar ``meta_*`` entries."""
    cutout, meta = read_cutout(data, where)
    return central_stamp(cutout), meta


def refusal(stamp: np.ndarray, max_nonfinite_frac: float) -> str | None:
    """Why a real galaxy's (3, 64, 64) stamp must not be used, or None: the same rules for every command
    that reads real cutouts. A model never sees a made-up pixel in the core, nor a stamp with many of
    them, nor pixels no real sky has."""
    if stamp.dtype.kind != "f":
        return "bad_dtype"
    if stamp.shape != (len(BANDS), STAMP_SIZE, STAMP_SIZE):
        return "bad_shape"
    c0 = (STAMP_SIZE - CORE_PX) // 2
    finite = np.isfinite(stamp)
    if not finite[:, c0:c0 + CORE_PX, c0:c0 + CORE_PX].all():
        return "nonfinite_core"
    if (~finite).mean() > max_nonfinite_frac:
        return "too_many_nonfinite"
    if np.abs(np.where(finite, stamp, 0.0)).max() > MAX_ABS_PIXEL_NMGY:
        return "pixel_out_of_range"
    return None


def status(reason: str | None, accepted: str) -> str:
    """The `status` column: ``accepted`` (what the command does with a good row), or REFUSED + why."""
    return accepted if reason is None else REFUSED + reason


def read_checked_cutout(data: bytes | str, where: str, max_nonfinite_frac: float) -> tuple[np.ndarray | None, dict, str | None]:
    """(the (H, W, 3) cutout, its meta, None) or (None or the cutout, meta, why it is refused): a file
    that cannot be decoded is a refusal too, never an exception."""
    try:
        cutout, meta = read_cutout(data, where)
    except StampDecodeError as err:
        return None, {}, err.reason
    except OSError:
        return None, {}, "unreadable_file"
    return cutout, meta, refusal(central_stamp(cutout), max_nonfinite_frac)
