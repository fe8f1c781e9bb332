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
