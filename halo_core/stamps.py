"""Stamp blobs of the paired dataset (DESIGN §3): npz with image_g/r/z float32 (64, 64) in nanomaggies."""

from __future__ import annotations

import io

import numpy as np

from halo_core.errors import StampDecodeError

BANDS = ("g", "r", "z")
BAND_KEYS = tuple(f"image_{b}" for b in BANDS)
STAMP_SIZE = 64
PIXEL_SCALE_ARCSEC = 0.262
CUTOUT_KEY = "cutout"  # the second real layout: (101, 101, 3) HWC, g,r,z


def encode_stamp(image: np.ndarray) -> bytes:
    """(3, H, W) g,r,z image -> npz blob in the upstream layout."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(band, dtype=np.float32) for k, band in zip(BAND_KEYS, image)})
    return buf.getvalue()


def decode_stamp(blob: bytes, *, source: str, task_id: str, column: str, keys=BAND_KEYS) -> np.ndarray:
    """npz blob -> (3, 64, 64) float32; raises StampDecodeError naming file, row and column."""
    where = f"{source} task_id={task_id} {column}"
    if blob is None:
        raise StampDecodeError(f"{where}: blob is NULL", "null_blob")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise StampDecodeError(f"{where}: no {missing}; has {sorted(npz.files)}", "missing_band")
            bands = [npz[k] for k in keys]
    except StampDecodeError:
        raise
    except Exception as err:  # zlib/zip/format errors all mean the same thing to the caller: corrupt blob
        raise StampDecodeError(f"{where}: corrupt npz ({type(err).__name__}: {err})", "corrupt_npz") from err
    shapes = {b.shape for b in bands}
    if shapes != {(STAMP_SIZE, STAMP_SIZE)}:
        raise StampDecodeError(f"{where}: band shapes {sorted(shapes)}, want ({STAMP_SIZE}, {STAMP_SIZE})", "bad_shape")
    return np.stack(bands).astype(np.float32, copy=False)


def decode_cutout(path: str, npz) -> tuple[np.ndarray, dict]:
    """A real survey cutout (``cutout`` (101, 101, 3) HWC g,r,z) -> central (3, 64, 64) stamp and its
    scalar ``meta_*`` entries; the crop keeps the galaxy at the stamp centre (rows/cols 18..81)."""
    if CUTOUT_KEY not in npz.files:
        raise StampDecodeError(f"{path}: no {CUTOUT_KEY!r} array; has {sorted(npz.files)[:8]}", "missing_band")
    cutout = npz[CUTOUT_KEY]
    if cutout.ndim != 3 or cutout.shape[2] != len(BANDS) or min(cutout.shape[:2]) < STAMP_SIZE:
        raise StampDecodeError(f"{path}: cutout shape {cutout.shape}, want (H >= 64, W >= 64, 3)", "bad_shape")
    top, left = (cutout.shape[0] - STAMP_SIZE) // 2, (cutout.shape[1] - STAMP_SIZE) // 2
    stamp = cutout[top:top + STAMP_SIZE, left:left + STAMP_SIZE].transpose(2, 0, 1).astype(np.float32)
    meta = {k.removeprefix("meta_"): npz[k].item() for k in npz.files if k.startswith("meta_") and npz[k].ndim == 0}
    return stamp, meta
