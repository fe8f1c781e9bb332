"""Deflector photometry drawn from the real DR10 LRG parent sample (docs/design.md §4 (simulator)), embedded as quantiles.

The numbers below were computed once from ``shared/data/lrg_parent_catalog.parquet`` (6,822 of
6,826 rows with finite g, r, z magnitudes):
``np.quantile(col, QUANTILE_LEVELS)`` for r_mag, g_mag - r_mag and r_minus_z, and
``np.corrcoef`` of the rank-based normal scores ``ndtri((rank - 0.5) / n)`` of the three columns.
The package never reads the catalogue at run time.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from halo_core.data.stamps import PIXEL_SCALE_ARCSEC

# 0.5 % and 99.5 % instead of min/max: the catalogue has a few r < 10 outliers (stars/blends).
QUANTILE_LEVELS = np.array([0.005, *np.arange(1, 20) * 0.05, 0.995])
R_MAG_QUANTILES = np.array([
    18.579, 19.805, 20.156, 20.359, 20.517, 20.650, 20.773, 20.865, 20.957, 21.044, 21.119,
    21.188, 21.261, 21.333, 21.409, 21.482, 21.569, 21.663, 21.786, 21.992, 22.522])
G_MINUS_R_QUANTILES = np.array([
    0.334, 0.788, 0.953, 1.090, 1.192, 1.291, 1.369, 1.449, 1.523, 1.593, 1.660,
    1.724, 1.779, 1.825, 1.863, 1.901, 1.938, 1.987, 2.044, 2.118, 2.494])
R_MINUS_Z_QUANTILES = np.array([
    0.439, 0.729, 0.863, 0.942, 0.995, 1.046, 1.085, 1.125, 1.160, 1.196, 1.230,
    1.266, 1.304, 1.344, 1.386, 1.437, 1.499, 1.569, 1.664, 1.849, 2.420])
# Normal-score correlation of (r_mag, g-r, r-z): fainter LRGs are redder (higher redshift), so
# sampling the three independently would make unphysical blue-faint and red-bright deflectors.
NORMAL_SCORE_CORRELATION = np.array([
    [1.000, 0.271, 0.636],
    [0.271, 1.000, 0.564],
    [0.636, 0.564, 1.000]])

AB_ZERO_POINT_MAG = 22.5  # nanomaggy zero point


def mag_to_flux_nmgy(mag: np.ndarray) -> np.ndarray:
    """AB magnitude -> flux in nanomaggies."""
    return 10.0 ** ((AB_ZERO_POINT_MAG - np.asarray(mag)) / 2.5)


def _psf_sigma_px(fwhm_arcsec) -> np.ndarray:
    return np.asarray(fwhm_arcsec) / PIXEL_SCALE_ARCSEC / 2.3548


# A Gaussian PSF's noise-equivalent area is 4 pi sigma_psf^2 pixels.
def point_source_depth(sky_sigma_r, fwhm_r_arcsec) -> np.ndarray:
    """5-sigma point-source r depth (AB mag, the catalogue's psfdepth_r) of a sky sigma (nmgy/px) and PSF FWHM."""
    return AB_ZERO_POINT_MAG - 2.5 * np.log10(5.0 * np.asarray(sky_sigma_r) * np.sqrt(4.0 * np.pi)
                                              * _psf_sigma_px(fwhm_r_arcsec))


def sky_sigma_for_depth(psfdepth_r_mag, fwhm_r_arcsec) -> np.ndarray:
    """The sky sigma (nmgy/px) that gives this 5-sigma point-source depth: point_source_depth inverted."""
    return mag_to_flux_nmgy(psfdepth_r_mag) / (5.0 * np.sqrt(4.0 * np.pi) * _psf_sigma_px(fwhm_r_arcsec))


def draw_lrg_mags(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) g, r, z AB magnitudes of LRG deflectors.

    Gaussian copula: correlated normal deviates with the catalogue's normal-score correlation,
    mapped to uniforms and through each column's inverse CDF (linear between the quantiles,
    clamped to the 0.5 % / 99.5 % values in the tails).
    """
    normal = rng.multivariate_normal(np.zeros(3), NORMAL_SCORE_CORRELATION, size=n, method="cholesky")
    uniform = ndtr(normal)
    r_mag = np.interp(uniform[:, 0], QUANTILE_LEVELS, R_MAG_QUANTILES)
    g_minus_r = np.interp(uniform[:, 1], QUANTILE_LEVELS, G_MINUS_R_QUANTILES)
    r_minus_z = np.interp(uniform[:, 2], QUANTILE_LEVELS, R_MINUS_Z_QUANTILES)
    return np.stack([r_mag + g_minus_r, r_mag, r_mag - r_minus_z], axis=1)
