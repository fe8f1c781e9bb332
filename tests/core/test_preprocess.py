from pathlib import Path

import numpy as np
import pytest

from halo_core.data.preprocess import PreprocessSpec, preprocess
from halo_core.errors import CheckpointError

ROBUST = PreprocessSpec("per_sample_robust", (-5.0, 20.0))
RESIDUAL = PreprocessSpec("residual_radial", (-5.0, 20.0))


def _radius():
    y, x = np.mgrid[:64, :64] - 31.5
    return np.hypot(x, y), x, y


def test_robust_normalisation_gives_unit_sigma_noise_per_band():
    rng = np.random.default_rng(0)
    sky = np.array([0.002, 0.004, 0.008])[None, :, None, None]
    images = 0.1 + sky * rng.normal(size=(4, 3, 64, 64))
    out = preprocess(images, ROBUST)
    assert np.allclose(np.median(out, axis=(2, 3)), 0, atol=0.05)
    assert np.allclose(out.std(axis=(2, 3)), 1, atol=0.05)  # each band in its own sigma units


def test_values_are_clipped_to_the_clip_range():
    images = np.random.default_rng(1).normal(size=(1, 3, 64, 64))
    images[0, :, 32, 32] = 1e6
    out = preprocess(images, ROBUST)
    assert out.max() == 20.0 and out.min() >= -5.0


def test_residual_removes_a_round_galaxy_and_keeps_an_arc():
    r, x, _ = _radius()
    rng = np.random.default_rng(2)
    galaxy = 0.3 * np.exp(-r / 3)
    arc = 0.05 * np.exp(-0.5 * ((r - 10) / 1.0) ** 2) * (x > 5)
    noise = 0.003 * rng.normal(size=(3, 64, 64))
    control = np.broadcast_to(galaxy, (3, 64, 64)) + noise
    out = preprocess(np.stack([control, control + arc]), RESIDUAL)
    core = r < 5
    unsubtracted = preprocess(control[None], ROBUST)[0]
    # the LRG is ~10x weaker in the core (the unsubtracted core is clipped at 20); what is left is
    # its slope across each 1-px ring
    assert np.abs(out[0][:, core]).mean() < 0.2 * np.abs(unsubtracted[:, core]).mean()
    on_arc = (arc > 0.03)
    assert out[1][:, on_arc].mean() > 5 and abs(out[0][:, on_arc].mean()) < 1


def test_spec_mismatch_is_an_error_naming_the_difference():
    with pytest.raises(CheckpointError, match="normalization"):
        ROBUST.require_same(RESIDUAL, "model vs data")
    ROBUST.require_same(PreprocessSpec.from_dict(ROBUST.to_dict()), "round trip")


def test_fast_preprocessing_gives_the_reference_bytes(paired_dir):
    """The filtered shards stay byte-identical: preprocessing equals the plain np.median / boolean-mask
    formulation it replaced, and decoding equals np.load, on the simulator's stamps (ties included)."""
    import io

    import pyarrow.parquet as pq

    from halo_core.config import load_preset
    from halo_core.data.preprocess import PreprocessSpec, median, pixel_radius, preprocess, ring_index
    from halo_core.data.stamps import BAND_KEYS, decode_stamp

    path = sorted(Path(paired_dir, "train").glob("*.parquet"))[0]
    blobs = pq.read_table(path, columns=["stamp_npz"])["stamp_npz"].to_pylist()[:64]
    stamps = np.stack([decode_stamp(b, source="s", task_id="t", column="stamp_npz") for b in blobs])
    reference = np.stack([np.stack([np.load(io.BytesIO(b))[k] for k in BAND_KEYS]) for b in blobs])
    assert stamps.tobytes() == reference.tobytes()
    stamps = np.nan_to_num(stamps)
    stamps[:4] = np.round(stamps[:4], 2)  # many ties

    def slow(images, spec):
        n, c, h, w = images.shape
        flat = images.reshape(n, c, h * w)
        pixels = flat[..., ring_index(h) >= spec.annulus_min_radius_px] if spec.normalization == "residual_radial" else flat
        center = np.median(pixels, axis=-1, keepdims=True)
        scale = spec.mad_factor * np.median(np.abs(pixels - center), axis=-1, keepdims=True)
        out = (flat - center) / np.where(scale > 0, scale, 1.0)
        if spec.normalization == "residual_radial":
            rings = ring_index(h)
            medians = np.stack([np.median(out[..., rings == r], axis=-1) for r in range(rings.max() + 1)], axis=-1)
            radius = pixel_radius(h)
            centres = np.bincount(rings, weights=radius) / np.bincount(rings)
            upper = np.clip(np.searchsorted(centres, radius), 1, len(centres) - 1)
            weight = np.clip((radius - centres[upper - 1]) / (centres[upper] - centres[upper - 1]), 0, 1).astype(np.float32)
            out = out - (medians[..., upper - 1] * (1 - weight) + medians[..., upper] * weight)
        return np.clip(out, *spec.clip_range).reshape(n, c, h, w)

    for normalization in ("residual_radial", "per_sample_robust"):
        spec = PreprocessSpec.from_config(load_preset("demo")) if normalization == "residual_radial" else \
            PreprocessSpec(normalization, (-5.0, 20.0))
        assert preprocess(stamps, spec).tobytes() == slow(stamps, spec).tobytes()
    for dtype in (np.float16, np.float32, np.float64):
        x = stamps.reshape(64, 3, -1)[..., :1001].astype(dtype)  # odd and even lengths
        assert np.median(x, axis=-1).tobytes() == median(x).tobytes()
        assert np.median(x[..., :1000], axis=-1).tobytes() == median(x[..., :1000]).tobytes()
