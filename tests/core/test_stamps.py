import io

import numpy as np
import pytest

from halo_core.errors import StampDecodeError
from halo_core.stamps import decode_stamp, encode_stamp


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
    assert err.value.reason == "corrupt_npz"
