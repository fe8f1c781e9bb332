"""Elliptical Sersic light with total-flux normalisation, rendered on oversampled stamp grids (docs/design.md §4 (simulator)).

The profile is parametrised by its total flux in the plane where it lives, so a source rendered
through the lens equation (surface brightness is conserved) has image-plane flux equal to
magnification x the unlensed flux. Conventions match lenstronomy's ``SERSIC_ELLIPSE``: r_eff is
the product-average ("intermediate axis") radius, R^2 = q x'^2 + y'^2 / q, and b_n is
lenstronomy's linear approximation, so images can be compared pixel by pixel.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from halo_core.simulate.lens import sie_coefficients, sie_deflection_major_frame

DEFAULT_OVERSAMPLE = 3  # sub-pixels per pixel side; docs/design.md §4 (simulator) asks for >= 3
# float32 transcendentals are 2-5x faster than float64 and leave ~1e-6 relative error, far below
# the sky noise; pass float64 for reference-precision images.
RENDER_DTYPE = np.float32


def sersic_b_n(n: np.ndarray) -> np.ndarray:
    """lenstronomy's b_n(n) = 1.9992 n - 0.3271 (within 0.5 % of the exact half-light b_n for n >= 1)."""
    return np.maximum(1.9992 * np.asarray(n) - 0.3271, 1e-5)


def sersic_amplitude(flux_nmgy, r_eff_arcsec, n):
    """Surface brightness at r_eff (nmgy / arcsec^2) of a Sersic profile with the given total flux.

    Integral of I_e exp(-b [(R/r_eff)^(1/n) - 1]) over the plane is
    2 pi n r_eff^2 e^b b^(-2n) Gamma(2n); the elliptical map R^2 = q x'^2 + y'^2 / q has unit
    Jacobian, so the total flux does not depend on q.
    """
    b = sersic_b_n(n)
    log_norm = np.log(2.0 * np.pi * n) + 2.0 * np.log(r_eff_arcsec) + b - 2.0 * n * np.log(b) + gammaln(2.0 * n)
    return flux_nmgy * np.exp(-log_norm)


def _subpixel_axis(size_px: int, pixel_scale_arcsec: float, oversample: int) -> np.ndarray:
    """Arcsec offsets of the sub-pixel centres along one stamp axis; pixel size//2 is the origin.

    The origin sits on pixel 32 of a 64-pixel stamp, as in the real cutouts (central 64x64 crop
    of a 101x101 cutout centred on pixel 50). Images are indexed [y, x] on this axis both ways.
    """
    return ((np.arange(size_px * oversample) + 0.5) / oversample - 0.5 - size_px // 2) * pixel_scale_arcsec


def bin_oversampled(surface_brightness: np.ndarray, oversample: int, pixel_scale_arcsec: float) -> np.ndarray:
    """(..., H*s, W*s) surface brightness -> (..., H, W) flux per pixel (mean x pixel area)."""
    *lead, hs, ws = surface_brightness.shape
    h, w = hs // oversample, ws // oversample
    # sum whole sub-pixel rows first (contiguous, fast), then the short runs within each pixel
    rows = surface_brightness.reshape(*lead, h, oversample, ws).sum(axis=-2)
    return rows.reshape(*lead, h, w, oversample).sum(axis=-1) * (pixel_scale_arcsec**2 / oversample**2)


def _sersic_profile_inplace(radius_sq: np.ndarray, inv_two_n: np.ndarray, b: np.ndarray) -> np.ndarray:
    """exp(-b (R / r_eff)^(1/n)) from (R / r_eff)^2, overwriting its input (no temporaries)."""
    # (R / r_eff)^(1/n) through the squared radius: one log/exp instead of sqrt + pow
    np.log(radius_sq, out=radius_sq)
    radius_sq *= inv_two_n
    np.exp(radius_sq, out=radius_sq)
    radius_sq *= -b
    return np.exp(radius_sq, out=radius_sq)


def _sersic_constants(flux_nmgy, r_eff_arcsec, n, dtype):
    """Per-system (1/(2n), b_n, I_e e^b_n) as (N, 1, 1) arrays: the profile is peak x exp(-b R'^(1/n))."""
    n = np.asarray(n, dtype=np.float64)
    b = sersic_b_n(n)
    peak = sersic_amplitude(np.asarray(flux_nmgy, dtype=np.float64), np.asarray(r_eff_arcsec, dtype=np.float64), n)
    peak = peak * np.exp(b)
    return [v.astype(dtype)[:, None, None] for v in (0.5 / n, b, peak)]


# Systems are rendered a few at a time so every (B, H*s, W*s) float32 temporary stays in the
# L2 cache; whole-batch arrays are memory-bound and ~3x slower.
_SYSTEMS_PER_BLOCK = 2


def render_sersic(flux_nmgy, r_eff_arcsec, n, q, phi_rad, *, size_px: int, pixel_scale_arcsec: float,
                  oversample: int = DEFAULT_OVERSAMPLE, dtype=RENDER_DTYPE) -> np.ndarray:
    """(N, H, W) nmgy/pixel images of N unlensed Sersic galaxies centred on the stamp origin.

    Parameters are arrays of shape (N,).
    """
    axis = _subpixel_axis(size_px, pixel_scale_arcsec, oversample)
    r_eff, q, phi = (np.asarray(v, dtype=np.float64) for v in (r_eff_arcsec, q, phi_rad))
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    # R^2 = q x'^2 + y'^2 / q with x', y' the rotated grid is the quadratic form
    # a x^2 + c y^2 + b x y in the unrotated grid: two outer sums and one scaled product per pixel
    a = (q * cos_phi**2 + sin_phi**2 / q) / r_eff**2
    c = (q * sin_phi**2 + cos_phi**2 / q) / r_eff**2
    b_xy = 2.0 * cos_phi * sin_phi * (q - 1.0 / q) / r_eff**2
    # lenstronomy floors R at 1e-4 arcsec; same floor keeps the n=4 cusp identical
    floor = (1e-8 / r_eff**2).astype(dtype)[:, None, None]
    x_sq = (a[:, None] * axis**2).astype(dtype)[:, None, :]
    y_sq = (c[:, None] * axis**2).astype(dtype)[:, :, None]
    xy = np.multiply.outer(axis, axis).astype(dtype)  # [y, x]
    b_xy = b_xy.astype(dtype)[:, None, None]
    inv_two_n, b_n, peak = _sersic_constants(flux_nmgy, r_eff, n, dtype)
    out = np.empty((len(r_eff), size_px, size_px), dtype=dtype)
    for lo in range(0, len(r_eff), _SYSTEMS_PER_BLOCK):
        blk = slice(lo, lo + _SYSTEMS_PER_BLOCK)
        radius_sq = np.multiply(xy, b_xy[blk])
        radius_sq += x_sq[blk]
        radius_sq += y_sq[blk]
        np.maximum(radius_sq, floor[blk], out=radius_sq)
        profile = _sersic_profile_inplace(radius_sq, inv_two_n[blk], b_n[blk])
        out[blk] = bin_oversampled(profile, oversample, pixel_scale_arcsec) * peak[blk]
    return out


def _rotation(phi):
    """(..., 2, 2) matrices taking sky (x, y) to the frame whose x axis lies at angle phi."""
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    return np.stack([np.stack([cos_phi, sin_phi], -1), np.stack([-sin_phi, cos_phi], -1)], -2)


def render_lensed_sersic(flux_nmgy, r_eff_arcsec, n, q, phi_rad, x0_arcsec, y0_arcsec,
                         theta_e_arcsec, lens_q, lens_phi_rad, gamma1, gamma2, *, size_px: int,
                         pixel_scale_arcsec: float, oversample: int = DEFAULT_OVERSAMPLE,
                         dtype=RENDER_DTYPE) -> np.ndarray:
    """(N, H, W) nmgy/pixel images of N Sersic sources seen through SIE + shear lenses at the origin.

    Source parameters (flux is the unlensed total flux, position in the source plane) and lens
    parameters are arrays of shape (N,). Every sub-pixel is ray-shot to the source plane.
    """
    f64 = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (
        r_eff_arcsec, q, phi_rad, x0_arcsec, y0_arcsec, theta_e_arcsec, lens_q, lens_phi_rad, gamma1, gamma2)]
    r_eff, q, phi, x0, y0, theta_e, lens_q, lens_phi, g1, g2 = np.broadcast_arrays(*f64)
    axis = _subpixel_axis(size_px, pixel_scale_arcsec, oversample)
    # Everything linear in the grid is folded into 2x2 maps so that per sub-pixel only the SIE
    # terms are evaluated. In the lens major-axis frame theta' = R_l theta, the source-frame
    # coordinates are w = R_s R_l^T (theta' - shear' theta' - alpha_SIE' - beta_0'), scaled by
    # (sqrt q, 1/sqrt q) per axis so that R^2 = |w|^2 (in units of r_eff).
    rot_lens = _rotation(lens_phi)
    shear = np.stack([np.stack([g1, g2], -1), np.stack([g2, -g1], -1)], -2)
    to_source = _rotation(phi) @ np.swapaxes(rot_lens, -1, -2)  # lens frame -> source frame
    axis_scale = np.stack([np.sqrt(q), 1.0 / np.sqrt(q)], -1)[..., :, None] / r_eff[:, None, None]
    to_source = axis_scale * to_source
    linear = to_source @ (rot_lens - rot_lens @ shear)  # sky theta -> w, without the SIE deflection
    offset = -(to_source @ rot_lens @ np.stack([x0, y0], -1)[..., None])[..., 0]
    sie_scale, root, sie_q = sie_coefficients(theta_e, lens_q, dtype)
    deflect = (-to_source * sie_scale[:, None, None].astype(np.float64))  # SIE' deflection -> w

    def outer_sum(m):  # (N, 2) coefficients on (x, y) -> per-system (H, W) pieces to broadcast-add
        return (m[:, 0, None] * axis).astype(dtype)[:, None, :], (m[:, 1, None] * axis).astype(dtype)[:, :, None]

    x_lens, y_lens = outer_sum(rot_lens[:, 0]), outer_sum(rot_lens[:, 1])
    u_lin, v_lin = outer_sum(linear[:, 0]), outer_sum(linear[:, 1])
    u_lin = (u_lin[0] + offset[:, 0, None, None].astype(dtype), u_lin[1])
    v_lin = (v_lin[0] + offset[:, 1, None, None].astype(dtype), v_lin[1])
    deflect = deflect.astype(dtype)[..., None, None]
    root, sie_q = root[:, None, None], sie_q[:, None, None]
    inv_two_n, b_n, peak = _sersic_constants(flux_nmgy, r_eff, n, dtype)
    floor = (1e-8 / r_eff**2).astype(dtype)[:, None, None]
    out = np.empty((len(r_eff), size_px, size_px), dtype=dtype)
    for lo in range(0, len(r_eff), _SYSTEMS_PER_BLOCK):
        blk = slice(lo, lo + _SYSTEMS_PER_BLOCK)
        alpha_x, alpha_y = sie_deflection_major_frame(x_lens[0][blk] + x_lens[1][blk],
                                                      y_lens[0][blk] + y_lens[1][blk], root[blk], sie_q[blk])
        u = u_lin[0][blk] + u_lin[1][blk]
        u += deflect[blk, 0, 0] * alpha_x
        u += deflect[blk, 0, 1] * alpha_y
        v = v_lin[0][blk] + v_lin[1][blk]
        v += deflect[blk, 1, 0] * alpha_x
        v += deflect[blk, 1, 1] * alpha_y
        u *= u
        v *= v
        u += v
        np.maximum(u, floor[blk], out=u)  # lenstronomy's R >= 1e-4 arcsec floor, as in render_sersic
        profile = _sersic_profile_inplace(u, inv_two_n[blk], b_n[blk])
        out[blk] = bin_oversampled(profile, oversample, pixel_scale_arcsec) * peak[blk]
    return out
