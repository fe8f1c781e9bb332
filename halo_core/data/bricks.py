"""The Legacy Survey brick grid: which DR10 brick a sky position lies in (docs/design.md §3 (data contract), `brickname`).

The survey tiles the sky with bricks of at most 0.25 x 0.25 deg, laid like a brick wall:
- rows of constant declination, centred at dec_c = -90 + 0.25 i (i = 0 .. 720); a position's row is
  i = floor((dec + 90 + 0.125) / 0.25), so each row spans dec_c +- 0.125;
- row i holds n_i bricks of equal RA width 360 / n_i, with n_i the smallest *even* number that keeps
  the width at the row's equator-side edge within 0.25 deg: n_i = 2 ceil(360 cos(|dec_c| - 0.125) / 0.25 / 2);
  the two polar caps (i = 0, 720) are one brick each;
- a position's column is j = floor(ra / 360 n_i) (RA taken modulo 360), its brick centre
  ra_c = (j + 0.5) 360 / n_i;
- the name is the centre's RA x 10 (four digits), ``p`` or ``m`` for the sign of dec_c, and |dec_c| x 10
  (three digits), both truncated after rounding to 1e-4 deg: ``0001m040`` is the brick centred at
  (0.1253, -4.0).
This is the grid of the survey's ``survey-bricks.fits.gz`` (and of desiutil.brick); the tests check it
against the 6,826 (RA, DEC, BRICKNAME) rows of a real LRG catalogue.
"""

from __future__ import annotations

import numpy as np

BRICK_SIZE_DEG = 0.25
_ROWS = int(round(180 / BRICK_SIZE_DEG)) + 1  # 721 rows, poles included


def _columns_per_row() -> np.ndarray:
    centre_dec = -90.0 + BRICK_SIZE_DEG * np.arange(_ROWS)
    edge = np.abs(centre_dec) - BRICK_SIZE_DEG / 2  # the row's edge nearer the equator: its widest circle
    n = 2 * np.ceil(360 / BRICK_SIZE_DEG * np.cos(np.radians(edge)) / 2).astype(int)
    n[[0, -1]] = 1
    return n


COLUMNS_PER_ROW = _columns_per_row()


def brick_names(ra_deg, dec_deg) -> np.ndarray:
    """The DR10 brick name of each (RA, Dec) position in degrees; a non-finite position or |dec| > 90
    raises ValueError (a position without a brick is the caller's to refuse)."""
    ra = np.atleast_1d(np.asarray(ra_deg, dtype=float))
    dec = np.atleast_1d(np.asarray(dec_deg, dtype=float))
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} position(s) without a brick (non-finite, or |dec| > 90), "
                         f"first at index {int(np.flatnonzero(bad)[0])}")
    ra = np.mod(ra, 360.0)
    row = np.floor((dec + 90.0 + BRICK_SIZE_DEG / 2) / BRICK_SIZE_DEG).astype(int).clip(0, _ROWS - 1)
    ncol = COLUMNS_PER_ROW[row]
    col = np.minimum(np.floor(ra / 360.0 * ncol).astype(int), ncol - 1)
    centre_ra = np.where(ncol == 1, 180.0, (col + 0.5) * 360.0 / ncol)
    centre_dec = -90.0 + BRICK_SIZE_DEG * row
    # to 1e-4 deg first, so 39.59999999 reads 0396 as the survey's names do
    ra_code = np.rint(centre_ra * 1e4).astype(np.int64) // 1000
    dec_code = np.rint(np.abs(centre_dec) * 1e4).astype(np.int64) // 1000
    sign = np.where(centre_dec >= 0, "p", "m")
    return np.array([f"{r:04d}{s}{d:03d}" for r, s, d in zip(ra_code, sign, dec_code)])
