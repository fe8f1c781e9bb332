"""Arcs injected into the six real DR10 cutouts (lens candidates: fine for the mechanics, not for science)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from halo_core.config import load_preset
from halo_core.data.filtering import build_filtered_dataset
from halo_core.data.stamps import PIXEL_SCALE_ARCSEC
from halo_core.errors import ConfigError, ContractError, StampDecodeError
from halo_core.simulate.injection import bricks_by_file, inject_cutouts, inject_dataset, read_cutouts
from halo_core.simulate.lens import q_phi_to_e1e2
from halo_core.simulate.psf import convolve, moffat_kernel
from halo_core.simulate.source import render_lensed_sersic


def _decode(blob: bytes) -> np.ndarray:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return np.stack([npz[f"image_{b}"] for b in "grz"])


@pytest.fixture(scope="module")
def injected(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("injected")
    cfg = load_preset("smoke", {"injection": {"injections_per_galaxy": 3}})
    report = inject_dataset(fixtures, out, cfg.injection)
    return report, pd.concat([pd.read_parquet(f) for f in sorted(out.rglob("*.parquet"))], ignore_index=True), out


def test_control_is_the_real_central_crop_bit_for_bit(injected):
    _, rows, _ = injected
    for _, row in rows.iterrows():
        with np.load(row["cutout_source"], allow_pickle=False) as npz:
            crop = npz["cutout"][18:82, 18:82].transpose(2, 0, 1)
        control = _decode(row["ctrl_stamp_npz"])
        assert control.dtype == np.float32 and control.tobytes() == np.ascontiguousarray(crop).tobytes()


def _rerender(row) -> np.ndarray:
    """The noiseless (3, 64, 64) arc of a row, re-rendered from its recorded parameters with the
    simulator's primitives."""
    one = lambda column: np.array([row[column]])  # noqa: E731
    unit = render_lensed_sersic(
        np.ones(1), one("src_reff_arcsec"), one("src_n"), one("src_q"), one("src_phi_rad"), one("src_x_arcsec"),
        one("src_y_arcsec"), one("theta_e_arcsec"), one("lens_q"), one("lens_phi_rad"), one("gamma1"),
        one("gamma2"), size_px=64, pixel_scale_arcsec=PIXEL_SCALE_ARCSEC)
    flux = 10 ** (-0.4 * (np.array([row[f"src_mag_{b}"] for b in "grz"]) - 22.5))
    fwhm = np.array([row[f"psf_fwhm_used_{b}"] for b in "grz"]) / PIXEL_SCALE_ARCSEC
    return convolve(unit[:, None] * flux[None, :, None, None], moffat_kernel(fwhm)[None])[0]


def test_stamp_minus_control_is_the_rendered_arc_plus_its_poisson_noise(injected):
    _, rows, _ = injected
    z = []
    for _, row in rows.iterrows():
        arc = _rerender(row)
        residual = _decode(row["stamp_npz"]).astype(np.float64) - _decode(row["ctrl_stamp_npz"])
        # where the arc has no light the stamp is the control (to float32 rounding)
        assert np.abs(residual[arc <= 0]).max(initial=0) < 1e-6
        bright = arc > 1e-3 * arc.max()
        z.append((residual[bright] - arc[bright]) / np.sqrt(arc[bright] / row["gain_e_per_nmgy"]))
        assert np.isclose(row["lens_e"], np.hypot(*q_phi_to_e1e2(row["lens_q"], row["lens_phi_rad"])))
    z = np.concatenate(z)  # the arc's Poisson noise, standardised: mean 0, unit variance
    assert len(z) > 10_000 and abs(z.mean()) < 0.05 and 0.9 < z.std() < 1.1, (len(z), z.mean(), z.std())


def test_arc_snr_matches_an_independent_measurement(injected):
    _, rows, _ = injected
    for galaxy, group in rows.groupby("galaxy_id"):
        with np.load(group["cutout_source"].iloc[0], allow_pickle=False) as npz:
            r_band = npz["cutout"][..., 1].astype(np.float64)
        yy, xx = np.mgrid[:101, :101]
        radius = np.sqrt((yy - 50) ** 2 + (xx - 50) ** 2)
        sky = r_band[(radius >= 32) & (radius < 50)]
        sigma = 1.4826 * np.median(np.abs(sky - np.median(sky)))
        assert np.isclose(group["sky_sigma_r"].iloc[0], sigma, rtol=1e-9), galaxy
        for _, row in group.iterrows():
            arc_r = _rerender(row)[1]
            assert np.isclose(row["arc_snr"], arc_r.max() / sigma, rtol=1e-5)
            assert np.isclose(row["arc_snr_sum"], np.sqrt(((arc_r / sigma) ** 2).sum()), rtol=1e-5)


def test_rows_carry_metadata_and_splits_are_disjoint_by_galaxy_and_brick(injected):
    report, rows, _ = injected
    assert len(rows) == 6 * 3 and rows.groupby("galaxy_id").size().eq(3).all()
    assert rows["theta_e_arcsec"].between(0.5, 2.5).all() and (rows["arc_snr"] > 0).all()
    assert (rows["meta_tier"] == "B").all() and rows["meta_galaxy_id"].notna().all()
    assert (rows["psf_source"] == "default").all() and report.psf_source == {"metadata": 0, "default": 6}
    for column in ("brickname", "galaxy_id"):
        owners = rows.groupby(column)["split"].nunique()
        assert (owners == 1).all(), owners
    assert set(rows["split"]) == {"train", "val", "test"}


def test_the_filter_reads_the_injected_dataset(injected, tmp_path):
    _, rows, out = injected
    report = build_filtered_dataset(load_preset("smoke"), str(out), str(tmp_path / "filtered"))
    assert report.integrity.ok and sum(r.rows_kept for r in report.splits.values()) == len(rows)


def test_parquet_cutouts_read_like_npz_and_need_a_position(fixtures, tmp_path):
    npz = read_cutouts(fixtures)
    blobs, meta = [], []
    for c in npz:
        with open(c.source, "rb") as f:
            blobs.append(f.read())
        meta.append({f"meta_{k}": v for k, v in c.meta.items() if k in ("ra", "dec", "brickname", "galaxy_id")})
    table = pa.Table.from_pandas(pd.DataFrame(meta).assign(cutout=blobs), preserve_index=False)
    pq.write_table(table, tmp_path / "cutouts.parquet")
    rows = read_cutouts(str(tmp_path / "cutouts.parquet"))
    assert [r.galaxy_id for r in rows] == [c.galaxy_id for c in npz]
    assert all(np.array_equal(r.control, c.control) for r, c in zip(rows, npz))
    # parquet columns override what the blob carries: a null brickname is an error naming the row
    pq.write_table(table.set_column(table.schema.get_field_index("meta_brickname"), "meta_brickname",
                                    pa.array([None] * len(npz), pa.string())), tmp_path / "bad.parquet")
    with pytest.raises(ContractError, match=r"bad.parquet row 0.*brickname"):
        read_cutouts(str(tmp_path / "bad.parquet"))


def test_fewer_than_three_bricks_cannot_make_disjoint_splits(fixtures, tmp_path):
    with pytest.raises(ContractError, match="need >= 3"):
        inject_cutouts(read_cutouts(fixtures)[:2], tmp_path)


def test_an_external_dataset_and_real_cutouts_are_two_modes_not_one():
    with pytest.raises(ConfigError, match="train_path and lrg_cutouts_path"):
        load_preset("smoke", {"train_path": "/data/paired", "lrg_cutouts_path": "/data/cutouts"})


def test_cutouts_of_chosen_bricks_are_read_without_decoding_the_others(fixtures, tmp_path):
    files = sorted(str(p) for p in Path(fixtures).glob("*.npz"))
    every = read_cutouts(files)
    bricks = [b for _, of_file in bricks_by_file(files) for b in of_file]
    assert bricks == [str(g.meta["brickname"]) for g in every]  # metadata alone, same order
    keep = {bricks[0]}
    chosen = read_cutouts(files, bricks=keep)
    assert [g.galaxy_id for g in chosen] == [g.galaxy_id for g in every if g.meta["brickname"] in keep]
    # a corrupt cutout outside the chosen bricks is never decoded
    broken = tmp_path / "broken.npz"
    with np.load(files[0]) as src:
        members = {k: src[k] for k in src.files if k.startswith("meta_")}
    members["meta_brickname"] = np.array("9999p999")
    members["cutout"] = np.zeros((3, 3, 3), np.float32)  # too small: decoding it would fail
    np.savez(broken, **members)
    assert len(read_cutouts([*files, str(broken)], bricks=keep)) == len(chosen)
    with pytest.raises(StampDecodeError):
        read_cutouts([*files, str(broken)])
