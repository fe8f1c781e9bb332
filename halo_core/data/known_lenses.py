"""Cross-match galaxies to the known strong lenses of the ``lenscat`` catalogue (docs/design.md §8 (trust)).

lenscat ships its catalogue (32,838 lenses and candidates graded confident or probable) as a CSV
inside the package. We read that file where the package is installed without importing the package:
``import lenscat`` pulls in ligo.skymap and healpy (~3.5 s and a screen of deprecation warnings) for
sky-map features a position match does not use. Sky matching is astropy's.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from halo_core.errors import ConfigError

COLUMNS = ("known_lens_name", "known_lens_grading", "known_lens_reference", "known_lens_sep_arcsec")
DEFAULT_RADIUS_ARCSEC = 2.0  # ~8 DR10 pixels: well inside a galaxy, far below the typical lens spacing


@functools.lru_cache(maxsize=1)
def catalogue() -> pd.DataFrame:
    """lenscat's table: name, ra, dec (deg), grading, reference."""
    spec = importlib.util.find_spec("lenscat")
    if spec is None or spec.origin is None:
        raise ConfigError("known-lens cross-match needs the lenscat package: pip install lenscat==1.1.3")
    table = pd.read_csv(Path(spec.origin).parent / "data" / "catalog.csv")
    return table.rename(columns={"RA [deg]": "ra", "DEC [deg]": "dec", "ref": "reference"})[
        ["name", "ra", "dec", "grading", "reference"]]


@functools.lru_cache(maxsize=1)
def _catalogue_coords():
    from astropy.coordinates import SkyCoord

    table = catalogue()
    return SkyCoord(ra=table["ra"].to_numpy(float), dec=table["dec"].to_numpy(float), unit="deg")


def crossmatch(ra, dec, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> pd.DataFrame:
    """One row per input position: the nearest known lens within ``radius_arcsec`` (name, grading,
    reference, separation in arcsec), or nulls where none lies that close."""
    from astropy.coordinates import SkyCoord

    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    out = pd.DataFrame({c: pd.Series([None] * len(ra), dtype=object) for c in COLUMNS[:3]})
    out[COLUMNS[3]] = np.nan
    valid = np.isfinite(ra) & np.isfinite(dec)  # a row without a position matches nothing
    if not valid.any():
        return out
    index, sep, _ = SkyCoord(ra=ra[valid], dec=dec[valid], unit="deg").match_to_catalog_sky(_catalogue_coords())
    sep_arcsec = sep.arcsec
    hit = sep_arcsec <= radius_arcsec
    rows = np.flatnonzero(valid)[hit]
    table = catalogue().iloc[index[hit]]
    out.loc[rows, "known_lens_name"] = table["name"].to_numpy()
    out.loc[rows, "known_lens_grading"] = table["grading"].to_numpy()
    out.loc[rows, "known_lens_reference"] = table["reference"].to_numpy()
    out.loc[rows, "known_lens_sep_arcsec"] = sep_arcsec[hit]
    return out
