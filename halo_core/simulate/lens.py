"""SIE + external shear deflection in closed form (Kormann et al. 1994; Keeton 2001), docs/design.md §4 (simulator).

Conventions follow lenstronomy's ``SIE`` and ``SHEAR`` profiles so the two agree to machine
precision: theta_E is the "intermediate axis" Einstein radius (the circularised radius that
encloses mean convergence 1), the axis ratio q = b/a and the position angle phi (radians, from
+x towards +y) map to e1, e2 via e = (1 - q) / (1 + q), e1 = e cos 2phi, e2 = e sin 2phi.
All functions broadcast, so parameters shaped (N, 1, 1) against grids shaped (N, H, W) lens N
systems at once.
"""

from __future__ import annotations

import numpy as np

# lenstronomy clamps q to this value for a round lens; the formula below is 0/0 at q = 1.
_Q_MAX = 0.99999999


def q_phi_to_e1e2(q: np.ndarray, phi_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis ratio and position angle -> lenstronomy ellipticity components (e1, e2)."""
    e = (1.0 - q) / (1.0 + q)
    return e * np.cos(2.0 * phi_rad), e * np.sin(2.0 * phi_rad)


def e1e2_to_q_phi(e1: np.ndarray, e2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lenstronomy ellipticity components (e1, e2) -> axis ratio q and position angle phi (rad)."""
    e = np.minimum(np.hypot(e1, e2), 0.9999)
    return (1.0 - e) / (1.0 + e), 0.5 * np.arctan2(e2, e1)


def sie_coefficients(theta_e_arcsec, q, dtype):
    """(scale, root, q) of the major-axis-frame SIE deflection, formed in float64 then cast.

    1 - q^2 cancels catastrophically in float32, so the q-dependent terms never see it.
    """
    q = np.minimum(np.asarray(q, dtype=np.float64), _Q_MAX)
    root = np.sqrt(1.0 - q**2)
    # intermediate-axis normalisation: b = theta_E sqrt(q) on the major-axis formula
    scale = np.asarray(theta_e_arcsec, dtype=np.float64) * np.sqrt(q) / root
    return scale.astype(dtype), root.astype(dtype), q.astype(dtype)


def sie_deflection_major_frame(x_major, y_major, root, q):
    """SIE deflection / scale in the frame where the major axis is x (see sie_coefficients)."""
    # the floor only matters at the exact centre, where the deflection is bounded anyway
    psi = np.maximum(np.sqrt((q * x_major) ** 2 + y_major**2), np.finfo(x_major.dtype).tiny)
    return np.arctan(root * x_major / psi), np.arctanh(root * y_major / psi)


def sie_deflection(x_arcsec, y_arcsec, theta_e_arcsec, q, phi_rad):
    """Deflection (alpha_x, alpha_y) in arcsec of a singular isothermal ellipsoid at the origin.

    Computed in the dtype of the grid (float32 grids are ~3x faster).
    """
    dtype = np.result_type(x_arcsec, np.float32)
    x_arcsec, y_arcsec = np.asarray(x_arcsec, dtype=dtype), np.asarray(y_arcsec, dtype=dtype)
    scale, root, q = sie_coefficients(theta_e_arcsec, q, dtype)
    cos_phi = np.cos(np.asarray(phi_rad, dtype=np.float64)).astype(dtype)
    sin_phi = np.sin(np.asarray(phi_rad, dtype=np.float64)).astype(dtype)
    # rotate into the frame where the major axis is x
    x_major = cos_phi * x_arcsec + sin_phi * y_arcsec
    y_major = -sin_phi * x_arcsec + cos_phi * y_arcsec
    alpha_major, alpha_minor = sie_deflection_major_frame(x_major, y_major, root, q)
    alpha_major, alpha_minor = scale * alpha_major, scale * alpha_minor
    return (cos_phi * alpha_major - sin_phi * alpha_minor,
            sin_phi * alpha_major + cos_phi * alpha_minor)


def shear_deflection(x_arcsec, y_arcsec, gamma1, gamma2):
    """Deflection of an external shear (lenstronomy ``SHEAR`` about the origin)."""
    dtype = np.result_type(x_arcsec, np.float32)
    gamma1, gamma2 = np.asarray(gamma1).astype(dtype), np.asarray(gamma2).astype(dtype)
    return gamma1 * x_arcsec + gamma2 * y_arcsec, gamma2 * x_arcsec - gamma1 * y_arcsec


def sie_shear_deflection(x_arcsec, y_arcsec, theta_e_arcsec, q, phi_rad, gamma1, gamma2):
    """Total deflection of SIE + external shear, both centred on the origin (the deflector)."""
    ax_sie, ay_sie = sie_deflection(x_arcsec, y_arcsec, theta_e_arcsec, q, phi_rad)
    ax_shear, ay_shear = shear_deflection(x_arcsec, y_arcsec, gamma1, gamma2)
    return ax_sie + ax_shear, ay_sie + ay_shear
