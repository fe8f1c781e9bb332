import io
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

from halo_core.data.stamps import decode_cutout, decode_stamp, encode_stamp
from halo_core.errors import StampDecodeError


def _decode(blob):
    return decode_stamp(blob, source="f.parquet", task_id="t1", column="stamp_npz")


def test_round_trip_keeps_band_order_and_dtype():
    image = np.arange(3 * 64 * 64, dtype=np.float32).reshape(3, 64, 64)
    out = _decode(encode_stamp(image))
    assert out.dtype == np.float32 and out.shape == (3, 64, 64)
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("blob, reason", [
    (b"not an npz at all", "corrupt_npz"),
    (encode_stamp(np.zeros((3, 64, 64), np.float32))[:200], "corrupt_npz"),
    (encode_stamp(np.zeros((3, 32, 32), np.float32)), "bad_shape"),
    (None, "null_blob"),
])
def test_bad_blobs_raise_with_reason_and_location(blob, reason):
    with pytest.raises(StampDecodeError, match="f.parquet task_id=t1 stamp_npz") as err:
        _decode(blob)
    assert err.value.reason == reason


def test_missing_band_names_the_band():
    buf = io.BytesIO()
    np.savez_compressed(buf, image_g=np.zeros((64, 64), np.float32), image_r=np.zeros((64, 64), np.float32))
    with pytest.raises(StampDecodeError, match="image_z") as err:
        _decode(buf.getvalue())
    assert err.value.reason == "missing_band"


def test_pickled_objects_are_refused():
    buf = io.BytesIO()
    np.savez(buf, image_g=np.array([{"evil": 1}], dtype=object), image_r=np.zeros((64, 64)), image_z=np.zeros((64, 64)))
    with pytest.raises(StampDecodeError) as err:
        _decode(buf.getvalue())
    assert err.value.reason == "pickled_object"


class _Payload:
    def __reduce__(self):  # unpickling this would create the file
        return (open, (str(_Payload.target), "w"))


def test_a_pickle_payload_blob_is_never_unpickled(tmp_path):
    _Payload.target = tmp_path / "pwned"
    for blob in (pickle.dumps(_Payload()), _npz(image_g=np.array([_Payload()], dtype=object))):
        with pytest.raises(StampDecodeError) as err:
            _decode(blob)
        assert err.value.reason in ("corrupt_npz", "pickled_object")
    assert not _Payload.target.exists()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{"image_g": np.zeros((64, 64), np.float32), "image_r": np.zeros((64, 64), np.float32),
                                "image_z": np.zeros((64, 64), np.float32), **arrays})
    return buf.getvalue()


def test_a_band_of_strings_is_a_row_error_not_a_crash():
    with pytest.raises(StampDecodeError, match="image_r has dtype <U") as err:
        _decode(_npz(image_r=np.full((64, 64), "0.1")))
    assert err.value.reason == "bad_dtype"


def _bomb(name: str, shape: tuple[int, ...], others: dict | None = None) -> bytes:
    """An npz whose ``name`` member is float32 zeros of ``shape``, streamed (never held in memory)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, value in (others or {}).items():
            with archive.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, value)
        with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
            row = bytes(4 * int(np.prod(shape[1:])))
            for _ in range(shape[0]):
                f.write(row)
    return buf.getvalue()


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    """64 MB of float32 zeros in a blob of < 1 MB (the probe's: 8000x8000 in 529 KB), and a 48 MB cutout:
    both refused from the member's header, before a byte of their data is decompressed."""
    zeros = np.zeros((64, 64), np.float32)
    blob = _bomb("image_g", (4000, 4000), {"image_r": zeros, "image_z": zeros})
    assert len(blob) < 1_000_000
    path = tmp_path / "bomb.npz"
    path.write_bytes(_bomb("cutout", (2000, 2000, 3)))
    tracemalloc.start()
    try:
        with pytest.raises(StampDecodeError, match=r"image_g shape \(4000, 4000\), want at most \(64, 64\)") as err:
            _decode(blob)
        assert err.value.reason == "bad_shape"
        with pytest.raises(StampDecodeError, match=r"cutout shape \(2000, 2000, 3\)"):
            decode_cutout(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # bytes: no member's data was decompressed (reading it needs 48-64 MB)


def _image() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, 64, 64)).astype(np.float32)


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _npy(band: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, band)
    return buf.getvalue()


def test_stored_and_deflated_npz_read_as_numpy_reads_them():
    image = _image()
    for save in (np.savez, np.savez_compressed):
        buf = io.BytesIO()
        save(buf, image_g=image[0], image_r=image[1], image_z=image[2])
        np.testing.assert_array_equal(_decode(buf.getvalue()), image)


@pytest.mark.parametrize("corrupt, match", [
    # a flipped bit inside a band's deflate stream: the inflate or the CRC check fails, never a wrong image
    (lambda blob: blob[:300] + bytes([blob[300] ^ 0x10]) + blob[301:], "corrupt npz"),
    # the local header names another member than the central directory does
    (lambda blob: blob.replace(b"image_g.npy", b"image_x.npy", 1), "does not match the central directory"),
])
def test_a_damaged_member_is_a_corrupt_npz(corrupt, match):
    blob = encode_stamp(_image())
    with pytest.raises(StampDecodeError, match=match) as err:
        _decode(corrupt(blob))
    assert err.value.reason == "corrupt_npz"


def test_a_member_compressed_otherwise_than_numpy_does_is_refused():
    image = _image()
    blob = _zip({f"image_{b}.npy": _npy(band) for b, band in zip("grz", image)}, zipfile.ZIP_LZMA)
    with pytest.raises(StampDecodeError, match="npz members are stored or deflated") as err:
        _decode(blob)
    assert err.value.reason == "corrupt_npz"
