"""Cross-match to lenscat: the six real DR10 fixtures are DESI candidates in it, matched within 0.5"."""

import numpy as np
import pytest

from halo_core.data.known_lenses import COLUMNS, catalogue, crossmatch
from tests.conftest import REAL_CUTOUTS


@pytest.fixture(scope="module")
def positions():
    paths = sorted(REAL_CUTOUTS.glob("*.npz"))
    ra, dec = [], []
    for path in paths:
        with np.load(path, allow_pickle=False) as npz:
            ra.append(float(npz["meta_ra"]))
            dec.append(float(npz["meta_dec"]))
    return np.array(ra), np.array(dec)


def test_every_fixture_is_a_known_lens_within_half_an_arcsec(positions):
    table = crossmatch(*positions)
    assert list(table.columns) == list(COLUMNS) and len(table) == 6
    assert table["known_lens_name"].str.startswith("DESI-").all()
    assert (table["known_lens_grading"] == "probable").all() and table["known_lens_reference"].notna().all()
    assert (table["known_lens_sep_arcsec"] < 0.5).all()


def test_no_match_beyond_the_radius_and_none_without_a_position(positions):
    ra, dec = positions
    # 3" north of the first fixture: outside the default 2", inside a 5" radius
    moved = (np.array([ra[0], 10.0, np.nan]), np.array([dec[0] + 3.0 / 3600, 10.0, 0.0]))
    table = crossmatch(*moved)
    assert table["known_lens_name"].isna().all() and table["known_lens_sep_arcsec"].isna().all()
    wide = crossmatch(*moved, radius_arcsec=5.0)
    assert wide["known_lens_name"].iloc[0] == crossmatch(ra[:1], dec[:1])["known_lens_name"].iloc[0]
    assert 2.5 < wide["known_lens_sep_arcsec"].iloc[0] < 3.5 and wide["known_lens_name"].iloc[1:].isna().all()


def test_the_catalogue_is_lenscats(positions):
    table = catalogue()
    assert len(table) == 32838 and set(table["grading"]) == {"confident", "probable"}
