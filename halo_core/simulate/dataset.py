"""Synthetic paired dataset in the exact upstream schema (docs/design.md §3 (data contract), §4 (simulator)): LRG stamps with and without arcs.

Each LRG gets one control (deflector + noise) shared by all its injections; each injection adds
a PSF-convolved lensed arc (and its Poisson noise) on top of that control, so stamp and control
share the LRG's noise realisation as in the real paired data.

Distributions (per injection unless stated):
- theta_E ~ U(0.5, 2.5) arcsec: spans the core-shortcut regime (< 0.75") and the resolved arcs.
- SIE axis ratio = LRG light axis ratio + N(0, 0.05), clipped to [0.4, 0.98]; position angle =
  light angle + N(0, 10 deg) (mass roughly follows light); external shear |gamma| ~ U(0, 0.08).
- source position uniform in a disc of radius theta_E around the lens (the SIS multiple-imaging
  region: rings and folds near the axis, lopsided doubles with a faint counter-image further out).
- source: Sersic n ~ U(0.7, 2.0), r_eff ~ U(SOURCE_REFF_ARCSEC), axis ratio ~ U(0.4, 1.0);
  colours g-r ~ U(0.1, 0.6), r-z ~ U(0.0, 0.6) (blue star-forming galaxies at z ~ 1-2).
  Offsets and sizes reproduce the team's measurement that for theta_E < 0.75" about 41 % of the
  arc flux lands in the central 10x10 pixels (docs/design.md §1 (domain) fact 3; we get 0.43, test_simulate.py).
  Compact sources near the axis (r_eff 0.1-0.4", offset <= 0.35 theta_E) put 70 % there, and
  made the core-flux shortcut look stronger than the real data has it.
- unlensed r mag ~ U(SOURCE_R_MAG_RANGE): set so the median arc_snr (max-pixel r-band SNR) is
  ~10 with tails from ~2 to ~50 (the default demo data: median 9.5, 5-95 % range 2.5-38).
- deflector: g, r, z magnitudes from the real LRG catalogue (catalog.py), Sersic n ~ U(3.5, 4.5),
  r_eff ~ U(0.5, 1.5) arcsec, axis ratio ~ U(0.5, 1.0).
- per brick: sky sigma per band ~ U(SKY_SIGMA_NMGY ranges), seeing FWHM per band = nominal x one
  shared lognormal factor (sigma 0.1); each LRG jitters the brick PSF by 3 % (psf_fwhm_used_*).
- noise: sky plus object Poisson noise, correlated between neighbouring pixels as in the real coadds
  (NOISE_CORRELATION_SIGMA_PX); white noise made a sum over the core 1.4-2x less noisy than real.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from halo_core import uris
from halo_core.config import SimulationConfig
from halo_core.data.stamps import BANDS, PIXEL_SCALE_ARCSEC, STAMP_SIZE, encode_stamp
from halo_core.outputs import dataset_folder
from halo_core.progress import Progress
from halo_core.simulate.catalog import draw_lrg_mags, mag_to_flux_nmgy, point_source_depth
from halo_core.simulate.lens import q_phi_to_e1e2
from halo_core.simulate.psf import convolve, moffat_kernel
from halo_core.simulate.source import DEFAULT_OVERSAMPLE, render_lensed_sersic, render_sersic

SPLITS = ("train", "val", "test")
# Real bricks whose every row has the arc masked (arc_snr == 0); the seed plan excludes them.
MASKED_ARC_BRICKS = {"0460m800": (46.0, -80.0), "3252p267": (325.2, 26.7)}
BRICK_SIZE_DEG = 0.25
BRICKS_PER_REGION = 4

PSF_FWHM_ARCSEC = np.array([1.45, 1.30, 1.20])  # g, r, z nominal DR10 seeing
SKY_SIGMA_NMGY = np.array([[0.0012, 0.0025], [0.0024, 0.0046], [0.0055, 0.0105]])  # outer-region 1.4826 x MAD
GAIN_E_PER_NMGY = (2000.0, 6000.0)  # deep-coadd effective gain: object Poisson noise << sky
# Coadd pixels are resampled (Lanczos) and stacked, so their noise is correlated between neighbours.
# White noise smoothed by a Gaussian of this sigma, rescaled to the same per-pixel sigma, gives
# 2x2 / 4x4 block sums with ~1.5x / ~2x the white-noise variance, the medians measured on the sky of
# the six real DR10 cutouts halo ships (halo_core/data/real_dr10_cutouts; tests/core/test_simulate.py
# compares the two).
NOISE_CORRELATION_SIGMA_PX = 0.5
THETA_E_ARCSEC = (0.5, 2.5)
SOURCE_R_MAG_RANGE = (20.1, 22.9)
SOURCE_OFFSET_MAX_THETA_E = 1.0
SOURCE_REFF_ARCSEC = (0.5, 1.5)

# Domain randomisation (on by default for the training presets, `simulation.domain_randomization`): the
# model must not learn this simulator's particulars. Every range is wider than the measurement it is
# anchored to, so the data we score (real galaxies, another renderer) falls inside the training support.
# - sources: DR_COMPACT_SOURCE_FRACTION log-uniform over DR_SOURCE_REFF_ARCSEC, compact knots to extended
#   discs, the rest over DR_EXTENDED_SOURCE_REFF_ARCSEC, so that the 41 % core-flux anchor stays the centre of
#   the distribution (median core share for theta_E < 0.75": 0.43 with, 0.44 without; test_simulate.py);
#   Sersic n over DR_SOURCE_N; a DR_CLUMPY_FRACTION of sources carry a compact star-forming clump
#   (DR_CLUMP_FLUX_SHARE of the flux, r_eff DR_CLUMP_REFF_ARCSEC, within 1 r_eff of the source centre).
DR_SOURCE_REFF_ARCSEC = (0.05, 1.5)
DR_EXTENDED_SOURCE_REFF_ARCSEC = (0.6, 1.8)  # the other sources: re-centres the core share on 41 % (below)
DR_COMPACT_SOURCE_FRACTION = 0.15
DR_SOURCE_N = (0.5, 2.5)
DR_CLUMPY_FRACTION = 0.1
DR_CLUMP_FLUX_SHARE = (0.1, 0.4)
DR_CLUMP_REFF_ARCSEC = (0.1, 0.2)  # on the 9x grid (each clump costs 9x a source on the 3x grid)
# - LRGs: Sersic n from exponential-like to steeper than de Vaucouleurs (the parent sample's fits
#   scatter around n = 4), r_eff 0.3-2.5", axis ratio 0.3-1.
DR_LRG_N = (2.5, 6.0)
DR_LRG_REFF_ARCSEC = (0.3, 2.5)
DR_LRG_Q = (0.3, 1.0)
# - neighbours: Poisson(DR_NEIGHBOURS_MEAN) galaxies 2-8" from the LRG (LRGs live in groups: companions
#   were the highest-scored false positives on independent data, docs/design.md §8 (trust)), r 19.5-23, red or blue;
#   foreground stars with probability DR_STAR_FRACTION, r 17-22 at 3-12". Both are in stamp and control.
DR_NEIGHBOURS_MEAN = 0.8
DR_NEIGHBOUR_RADIUS_ARCSEC = (2.0, 8.0)
DR_NEIGHBOUR_R_MAG = (19.5, 23.0)
DR_STAR_FRACTION = 0.15
DR_STAR_R_MAG = (17.0, 22.0)
DR_STAR_RADIUS_ARCSEC = (3.0, 12.0)
# - PSF: brick seeing lognormal sigma 0.18 (nominal 0.1) and per-band jitter 8 % (nominal 3 %): beyond
#   DR10's FWHM range (r ~ 0.9-2.0") and its band-to-band differences.
DR_SEEING_SIGMA = 0.18
DR_BAND_JITTER = 0.08
# - noise: correlation length per chunk of LRGs over DR_NOISE_CORRELATION_SIGMA_PX around the measured
#   0.5 px; a sky-subtraction residual plane of up to DR_SKY_GRADIENT_SIGMA sky sigma across the stamp;
#   with probability DR_MASKED_COLUMN_FRACTION 1-3 masked (zero) columns, counted in bad_pixel_frac.
DR_NOISE_CORRELATION_SIGMA_PX = (0.3, 0.8)
DR_SKY_GRADIENT_SIGMA = 1.0
DR_MASKED_COLUMN_FRACTION = 0.05

# A source smaller than a few sub-pixels is under-sampled on the 3x grid: after the PSF, a 3x grid is off by
# 46 % of the peak at r_eff 0.05", 16 % at 0.1", 5 % at 0.2" (against 45x). Smaller sources are ray-shot on
# finer grids, (r_eff below, factor on the oversampling): 15x for < 0.1" (1.1 % off at 0.05"), 9x for < 0.3"
# (1.2 % at 0.1", 0.3 % at 0.2"); validated against lenstronomy (test_simulate.py).
COMPACT_OVERSAMPLE_FACTORS = ((0.1, 5), (0.3, 3))

MASKED_ROW_FRACTION = 0.01
NAN_ROW_FRACTION = 0.002
BAD_PIXEL_ROW_FRACTION = 0.02  # rows whose cutout fails the bad_pixel_frac <= 0.2 quality cut
_LRG_CHUNK = 32  # LRGs rendered per vectorised batch: ~40 MB per (N, 192, 192) float64 array

EXPERIMENT_ID = "halo-sim"
CONFIG_ID = "sie_shear_sersic_moffat_v1"
CONFIG_ID_RANDOMIZED = "sie_shear_sersic_moffat_dr_v1"

SCHEMA = pa.schema([
    ("stamp_npz", pa.binary()), ("ctrl_stamp_npz", pa.binary()), ("task_id", pa.string()),
    ("brickname", pa.string()), ("ra", pa.float64()), ("dec", pa.float64()),
    ("theta_e_arcsec", pa.float64()), ("arc_snr", pa.float64()), ("arc_snr_sum", pa.float64()),
    ("is_control", pa.int64()), ("psfsize_r", pa.float64()), ("psf_fwhm_used_g", pa.float64()),
    ("psf_fwhm_used_r", pa.float64()), ("psf_fwhm_used_z", pa.float64()), ("psfdepth_r", pa.float64()),
    ("bad_pixel_frac", pa.float64()), ("wise_brightmask_frac", pa.float64()), ("src_dmag", pa.float64()),
    ("src_reff_arcsec", pa.float64()), ("src_e", pa.float64()), ("shear", pa.float64()),
    ("lens_e", pa.float64()), ("lens_phi_rad", pa.float64()), ("magnification", pa.float64()),
    ("cutout_ok", pa.int64()), ("ebv", pa.float64()), ("psf_bin", pa.int64()), ("depth_bin", pa.int64()),
    ("region_id", pa.int64()), ("experiment_id", pa.string()), ("config_id", pa.string()),
    ("bandset", pa.string()), ("stamp_size", pa.int64()), ("split", pa.string()),
])
PSF_BIN_EDGES_ARCSEC = np.array([1.2, 1.35, 1.5])
DEPTH_BIN_EDGES_MAG = np.array([24.4, 24.7, 25.0])


@dataclass(frozen=True)
class SimulationReport:
    """What simulate_dataset wrote: per-split row and file counts and the injected faults."""

    out_dir: str
    rows: dict[str, int]
    files: dict[str, int]
    nan_rows: int
    masked_arc_rows: int
    bad_pixel_rows: int
    seconds: float
    seed: int
    arc_snr_median: float  # over unmasked injections
    masked_bricks: tuple[str, ...] = field(default=tuple(MASKED_ARC_BRICKS))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def brick_name(ra_deg: float, dec_deg: float) -> str:
    """DR10 brick name of a brick centre, e.g. (46.0, -80.0) -> '0460m800'."""
    return f"{round(ra_deg * 10):04d}{'p' if dec_deg >= 0 else 'm'}{round(abs(dec_deg) * 10):03d}"


def plan_bricks(rng: np.random.Generator, n_bricks: dict[str, int]) -> dict[str, list[tuple[str, float, float]]]:
    """Unique (name, ra, dec) brick centres per split; the two masked-arc bricks lead the train split."""
    used = set(MASKED_ARC_BRICKS)
    plan = {split: [] for split in SPLITS}
    plan["train"] = [(name, ra, dec) for name, (ra, dec) in MASKED_ARC_BRICKS.items()]
    for split in SPLITS:
        while len(plan[split]) < n_bricks[split]:
            dec = round(rng.uniform(-60.0, 80.0) / BRICK_SIZE_DEG) * BRICK_SIZE_DEG
            ra = round(rng.uniform(0.0, 360.0), 1) % 360.0
            name = brick_name(ra, dec)
            if name not in used:
                used.add(name)
                plan[split].append((name, ra, dec))
    return plan


def draw_injections(rng: np.random.Generator, owner: np.ndarray, light_q: np.ndarray, light_phi: np.ndarray,
                    deflector_r_mag: np.ndarray) -> dict[str, np.ndarray]:
    """Lens and source parameters of one injection per entry of ``owner`` (an index into the per-LRG
    arrays): the priors of the module docstring, the SIE aligned with the LRG's light (axis ratio
    ``light_q``, position angle ``light_phi``). Shared by the simulator and the injection into real
    cutouts (halo_core.simulate.injection), so both draw from one prior."""
    n_inj = len(owner)
    theta_e = rng.uniform(*THETA_E_ARCSEC, n_inj)
    lens_q = np.clip(light_q[owner] + rng.normal(0.0, 0.05, n_inj), 0.4, 0.98)
    lens_phi = np.mod(light_phi[owner] + rng.normal(0.0, np.radians(10.0), n_inj), np.pi)
    shear = rng.uniform(0.0, 0.08, n_inj)
    shear_angle = rng.uniform(0.0, np.pi, n_inj)
    offset = SOURCE_OFFSET_MAX_THETA_E * theta_e * np.sqrt(rng.random(n_inj))
    offset_angle = rng.uniform(0.0, 2 * np.pi, n_inj)
    src_q = rng.uniform(0.4, 1.0, n_inj)
    src_r = rng.uniform(*SOURCE_R_MAG_RANGE, n_inj)
    src_g = src_r + rng.uniform(0.1, 0.6, n_inj)
    src_z = src_r - rng.uniform(0.0, 0.6, n_inj)
    return {
        "owner": owner, "theta_e": theta_e, "lens_q": lens_q, "lens_phi": lens_phi,
        "gamma1": shear * np.cos(2 * shear_angle), "gamma2": shear * np.sin(2 * shear_angle), "shear": shear,
        "src_x": offset * np.cos(offset_angle), "src_y": offset * np.sin(offset_angle),
        "src_n": rng.uniform(0.7, 2.0, n_inj), "src_reff": rng.uniform(*SOURCE_REFF_ARCSEC, n_inj),
        "src_q": src_q, "src_phi": rng.uniform(0.0, np.pi, n_inj),
        "src_flux": mag_to_flux_nmgy(np.stack([src_g, src_r, src_z], axis=1)),  # (n_inj, 3) unlensed
        "src_dmag": src_r - deflector_r_mag[owner],  # source (unlensed) minus deflector r magnitude
        "clump_share": np.zeros(n_inj),  # smooth sources; domain randomisation makes some clumpy
    }


def draw_split(rng: np.random.Generator, bricks, n_lrg: int, lrgs_per_brick: int, injections_per_lrg: int,
                first_region: int, randomize: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All per-LRG and per-injection parameters of one split (cheap; rendering comes later)."""
    n_bricks = len(bricks)
    brick_of_lrg = np.minimum(np.arange(n_lrg) // lrgs_per_brick, n_bricks - 1)
    # brick-level observing conditions
    seeing = np.exp(rng.normal(0.0, DR_SEEING_SIGMA if randomize else 0.1, n_bricks))
    brick_fwhm = PSF_FWHM_ARCSEC[None, :] * seeing[:, None]  # (n_bricks, 3) arcsec
    brick_sky = rng.uniform(SKY_SIGMA_NMGY[:, 0], SKY_SIGMA_NMGY[:, 1], (n_bricks, 3))
    psfdepth_r = point_source_depth(brick_sky[:, 1], brick_fwhm[:, 1])
    brick_ebv = np.exp(rng.normal(np.log(0.03), 0.6, n_bricks))
    region = first_region + np.arange(n_bricks) // BRICKS_PER_REGION

    b = brick_of_lrg
    brick_ra = np.array([ra for _, ra, _ in bricks])[b]
    brick_dec = np.array([dec for _, _, dec in bricks])[b]
    half = BRICK_SIZE_DEG / 2
    dec = brick_dec + rng.uniform(-half, half, n_lrg)
    ra = (brick_ra + rng.uniform(-half, half, n_lrg) / np.cos(np.radians(brick_dec))) % 360.0
    bad = rng.random(n_lrg) < BAD_PIXEL_ROW_FRACTION
    lrg = {
        "brickname": np.array([bricks[i][0] for i in b]), "ra": ra, "dec": dec,
        "mags": draw_lrg_mags(rng, n_lrg), "reff": rng.uniform(0.5, 1.5, n_lrg),
        "n": rng.uniform(3.5, 4.5, n_lrg), "q": rng.uniform(0.5, 1.0, n_lrg), "phi": rng.uniform(0, np.pi, n_lrg),
        "fwhm": brick_fwhm[b] * np.exp(rng.normal(0.0, DR_BAND_JITTER if randomize else 0.03, (n_lrg, 3))),
        "sky": brick_sky[b], "gain": rng.uniform(*GAIN_E_PER_NMGY, n_lrg),
        "psfsize_r": brick_fwhm[b, 1], "psfdepth_r": psfdepth_r[b], "ebv": brick_ebv[b], "region_id": region[b],
        # clean cutouts have a few per cent masked pixels; the bad ones fail the <= 0.2 cut
        "bad_pixel_frac": np.where(bad, rng.uniform(0.21, 0.6, n_lrg), rng.exponential(0.01, n_lrg).clip(0, 0.15)),
        "wise_brightmask_frac": np.where(rng.random(n_lrg) < 0.1, rng.uniform(0.0, 0.3, n_lrg), 0.0),
    }

    owner = np.repeat(np.arange(n_lrg), injections_per_lrg)
    inj = draw_injections(rng, owner, lrg["q"], lrg["phi"], lrg["mags"][:, 1])
    n_inj = len(owner)
    # data-quality fixtures: masked arcs and NaN pixels, at least one of each per split
    in_masked_brick = np.isin(lrg["brickname"][owner], list(MASKED_ARC_BRICKS))
    candidates = np.flatnonzero(~in_masked_brick)
    n_masked = max(1, round(MASKED_ROW_FRACTION * len(candidates)))
    n_nan = max(1, round(NAN_ROW_FRACTION * n_inj))
    picked = rng.choice(candidates, n_masked + n_nan, replace=False)
    inj["masked"] = in_masked_brick.copy()
    inj["masked"][picked[:n_masked]] = True
    inj["nan"] = np.zeros(n_inj, dtype=bool)
    inj["nan"][picked[n_masked:]] = True
    if randomize:  # drawn last, so the nominal simulator's draws (and data) stay what they were
        _randomize(rng, lrg, inj)
    return lrg, inj


def _randomize(rng: np.random.Generator, lrg: dict, inj: dict) -> None:
    """Domain randomisation of one split's draw (in place; the DR_* ranges above)."""
    n_lrg, n_inj = len(lrg["reff"]), len(inj["theta_e"])
    lrg.update(reff=rng.uniform(*DR_LRG_REFF_ARCSEC, n_lrg), n=rng.uniform(*DR_LRG_N, n_lrg),
               q=rng.uniform(*DR_LRG_Q, n_lrg))
    lrg.update(_draw_field(rng, n_lrg))
    lrg["bad_pixel_frac"] = np.minimum(lrg["bad_pixel_frac"] + lrg["masked_columns"].sum(1) / STAMP_SIZE, 1.0)
    # the SIE still follows the light: re-derive its axis ratio from the new LRG shape
    inj["lens_q"] = np.clip(lrg["q"][inj["owner"]] + rng.normal(0.0, 0.05, n_inj), 0.4, 0.98)
    compact = rng.random(n_inj) < DR_COMPACT_SOURCE_FRACTION
    inj["src_reff"] = np.where(compact, np.exp(rng.uniform(*np.log(DR_SOURCE_REFF_ARCSEC), n_inj)),
                               rng.uniform(*DR_EXTENDED_SOURCE_REFF_ARCSEC, n_inj))
    inj["src_n"] = rng.uniform(*DR_SOURCE_N, n_inj)
    inj["clump_share"] = np.where(rng.random(n_inj) < DR_CLUMPY_FRACTION, rng.uniform(*DR_CLUMP_FLUX_SHARE, n_inj), 0.0)
    clump_r = inj["src_reff"] * np.sqrt(rng.random(n_inj))
    clump_angle = rng.uniform(0.0, 2 * np.pi, n_inj)
    inj.update(clump_reff=rng.uniform(*DR_CLUMP_REFF_ARCSEC, n_inj), clump_dx=clump_r * np.cos(clump_angle),
               clump_dy=clump_r * np.sin(clump_angle))


MAX_NEIGHBOURS = 3


def _draw_field(rng: np.random.Generator, n_lrg: int) -> dict[str, np.ndarray]:
    """Per-LRG field of the domain randomisation: neighbours, a star, sky gradient, masked columns, noise."""
    n_nb = np.minimum(rng.poisson(DR_NEIGHBOURS_MEAN, n_lrg), MAX_NEIGHBOURS)
    shape = (n_lrg, MAX_NEIGHBOURS)
    radius = rng.uniform(*DR_NEIGHBOUR_RADIUS_ARCSEC, shape)
    angle = rng.uniform(0.0, 2 * np.pi, shape)
    nb_r = rng.uniform(*DR_NEIGHBOUR_R_MAG, shape)
    red = rng.random(shape) < 0.5  # group members (red) or field spirals (blue)
    nb_gr = np.where(red, rng.uniform(1.0, 1.9, shape), rng.uniform(0.2, 0.8, shape))
    nb_rz = np.where(red, rng.uniform(0.8, 1.4, shape), rng.uniform(0.1, 0.6, shape))
    nb_flux = mag_to_flux_nmgy(np.stack([nb_r + nb_gr, nb_r, nb_r - nb_rz], axis=-1))
    nb_flux[np.arange(MAX_NEIGHBOURS)[None, :] >= n_nb[:, None]] = 0.0
    star = rng.random(n_lrg) < DR_STAR_FRACTION
    star_r = rng.uniform(*DR_STAR_R_MAG, n_lrg)
    star_gr, star_rz = rng.uniform(0.3, 1.5, n_lrg), rng.uniform(0.0, 1.0, n_lrg)
    star_flux = mag_to_flux_nmgy(np.stack([star_r + star_gr, star_r, star_r - star_rz], axis=1)) * star[:, None]
    star_radius = rng.uniform(*DR_STAR_RADIUS_ARCSEC, n_lrg) / PIXEL_SCALE_ARCSEC
    star_angle = rng.uniform(0.0, 2 * np.pi, n_lrg)
    star_px = np.clip(np.round(STAMP_SIZE // 2 + star_radius[:, None] * np.stack(
        [np.sin(star_angle), np.cos(star_angle)], axis=1)), 0, STAMP_SIZE - 1).astype(int)  # (y, x)
    masked_columns = np.zeros((n_lrg, STAMP_SIZE), bool)
    for i in np.flatnonzero(rng.random(n_lrg) < DR_MASKED_COLUMN_FRACTION):
        masked_columns[i, rng.choice(STAMP_SIZE, rng.integers(1, 4), replace=False)] = True
    return {"nb_x": radius * np.cos(angle), "nb_y": radius * np.sin(angle), "nb_flux": nb_flux,
            "nb_reff": rng.uniform(0.2, 1.0, shape), "nb_n": rng.uniform(0.5, 4.0, shape),
            "nb_q": rng.uniform(0.3, 1.0, shape), "nb_phi": rng.uniform(0.0, np.pi, shape),
            "star_flux": star_flux, "star_px": star_px,
            "sky_gradient": rng.normal(0.0, DR_SKY_GRADIENT_SIGMA / 2, (n_lrg, 3, 2)),  # sky sigma per half stamp
            "masked_columns": masked_columns, "noise_correlation_px": DR_NOISE_CORRELATION_SIGMA_PX}


def _field_light(lrg, lrg_idx: np.ndarray, oversample: int) -> np.ndarray:
    """(n, 3, 64, 64) unconvolved nmgy of the neighbours and stars around LRGs ``lrg_idx``."""
    n = len(lrg_idx)
    out = np.zeros((n, 3, STAMP_SIZE, STAMP_SIZE), np.float32)
    i, k = np.nonzero(lrg["nb_flux"][lrg_idx, :, 1] > 0)
    if len(i):
        zeros = np.zeros(len(i))
        # theta_E = 0: no deflection, so the lensed renderer draws an unlensed Sersic off the centre
        shapes = render_lensed_sersic(
            np.ones(len(i)), lrg["nb_reff"][lrg_idx][i, k], lrg["nb_n"][lrg_idx][i, k], lrg["nb_q"][lrg_idx][i, k],
            lrg["nb_phi"][lrg_idx][i, k], lrg["nb_x"][lrg_idx][i, k], lrg["nb_y"][lrg_idx][i, k], zeros,
            np.full(len(i), 0.9), zeros, zeros, zeros, size_px=STAMP_SIZE, pixel_scale_arcsec=PIXEL_SCALE_ARCSEC,
            oversample=oversample)
        np.add.at(out, i, shapes[:, None] * lrg["nb_flux"][lrg_idx][i, k][:, :, None, None].astype(np.float32))
    y, x = lrg["star_px"][lrg_idx].T
    out[np.arange(n), :, y, x] += lrg["star_flux"][lrg_idx].astype(np.float32)
    return out


def correlated_noise(rng: np.random.Generator, shape: tuple[int, ...],
                     sigma_px: float = NOISE_CORRELATION_SIGMA_PX) -> np.ndarray:
    """Unit-variance Gaussian noise over the last two axes, correlated like coadd pixels.

    White noise on a grid padded by the kernel radius, smoothed by a separable Gaussian whose taps
    have unit sum of squares (so every pixel keeps variance 1), then cropped: no edge effects.
    """
    half = max(1, int(np.ceil(3 * sigma_px)))
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_px) ** 2)
    taps /= np.sqrt((taps**2).sum())
    *lead, h, w = shape
    white = rng.standard_normal((*lead, h + 2 * half, w + 2 * half))
    rows = sum(t * white[..., :, k:k + w] for k, t in enumerate(taps))
    return sum(t * rows[..., k:k + h, :] for k, t in enumerate(taps))


def oversample_factors(r_eff_arcsec: np.ndarray) -> np.ndarray:
    """Per source, the factor on the base oversampling its size needs (COMPACT_OVERSAMPLE_FACTORS)."""
    factors = np.ones(len(r_eff_arcsec), int)
    for limit, factor in reversed(COMPACT_OVERSAMPLE_FACTORS):
        factors[np.asarray(r_eff_arcsec) < limit] = factor
    return factors


def render_arcs(rng: np.random.Generator, inj, rows: np.ndarray, kernels: np.ndarray, gain: np.ndarray,
                oversample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The PSF-convolved lensed arcs of injections ``rows`` (n, 3, 64, 64) nmgy, their Poisson noise
    (correlated like coadd pixels, variance arc / gain) and magnifications. ``kernels`` (n, 3, K, K)
    and ``gain`` (n, 1, 1, 1) are per injection; compact sources get finer sub-pixel grids."""
    size, pix = STAMP_SIZE, PIXEL_SCALE_ARCSEC
    unit_arc = np.empty((len(rows), size, size), np.float32)
    factors = oversample_factors(inj["src_reff"][rows])
    for factor in np.unique(factors):
        subset = factors == factor
        r = rows[subset]
        if len(r):
            unit_arc[subset] = render_lensed_sersic(
                np.ones(len(r)), inj["src_reff"][r], inj["src_n"][r], inj["src_q"][r], inj["src_phi"][r],
                inj["src_x"][r], inj["src_y"][r], inj["theta_e"][r], inj["lens_q"][r], inj["lens_phi"][r],
                inj["gamma1"][r], inj["gamma2"][r], size_px=size, pixel_scale_arcsec=pix,
                oversample=oversample * int(factor))
    clumpy = np.flatnonzero(inj["clump_share"][rows] > 0)
    if len(clumpy):  # a compact clump replaces its share of the smooth light, at the same source-plane flux
        r = rows[clumpy]
        clump = render_lensed_sersic(
            np.ones(len(r)), inj["clump_reff"][r], np.ones(len(r)), np.ones(len(r)), np.zeros(len(r)),
            inj["src_x"][r] + inj["clump_dx"][r], inj["src_y"][r] + inj["clump_dy"][r], inj["theta_e"][r],
            inj["lens_q"][r], inj["lens_phi"][r], inj["gamma1"][r], inj["gamma2"][r], size_px=size,
            pixel_scale_arcsec=pix, oversample=oversample * COMPACT_OVERSAMPLE_FACTORS[1][1])
        share = inj["clump_share"][r].astype(np.float32)[:, None, None]
        unit_arc[clumpy] = (1 - share) * unit_arc[clumpy] + share * clump
    # unit unlensed flux in, so the image-plane sum is the magnification (of the flux inside the stamp)
    magnification = unit_arc.sum(axis=(-2, -1))
    arc = convolve(unit_arc[:, None] * inj["src_flux"][rows][:, :, None, None], kernels)
    noise = correlated_noise(rng, arc.shape) * np.sqrt(np.clip(arc, 0, None) / gain)
    return arc, noise, magnification


@dataclass
class RenderedChunk:
    """A chunk of LRGs rendered: one control per LRG and one stamp per injection on it (nanomaggies)."""

    controls: np.ndarray  # (n_lrg, 3, 64, 64)
    stamps: np.ndarray  # (n_inj, 3, 64, 64)
    rows: np.ndarray  # each stamp's index into the split's injections
    local: np.ndarray  # each stamp's LRG, as an index into the chunk's controls
    arc_snr: np.ndarray  # max-pixel r-band SNR of the noiseless arc; 0 where the arc is masked
    arc_snr_sum: np.ndarray  # matched-filter (integrated) SNR
    magnification: np.ndarray


def render_chunk(rng: np.random.Generator, lrg, inj, lrg_idx: np.ndarray, oversample: int) -> RenderedChunk:
    """The controls of LRGs ``lrg_idx`` and the stamps of every injection on them."""
    size, pix = STAMP_SIZE, PIXEL_SCALE_ARCSEC
    kernels = moffat_kernel(lrg["fwhm"][lrg_idx] / pix)  # (n, 3, K, K), shared by stamp and control
    sky = lrg["sky"][lrg_idx][:, :, None, None]
    gain = lrg["gain"][lrg_idx][:, None, None, None]

    shape = render_sersic(np.ones(len(lrg_idx)), lrg["reff"][lrg_idx], lrg["n"][lrg_idx], lrg["q"][lrg_idx],
                          lrg["phi"][lrg_idx], size_px=size, pixel_scale_arcsec=pix, oversample=oversample)
    lrg_flux = mag_to_flux_nmgy(lrg["mags"][lrg_idx])[:, :, None, None]
    randomized = "nb_flux" in lrg
    field_light = _field_light(lrg, lrg_idx, oversample) if randomized else 0.0
    lrg_image = convolve(shape[:, None] * lrg_flux + field_light, kernels)  # (n, 3, 64, 64) nmgy
    noise_var = sky**2 + np.clip(lrg_image, 0, None) / gain
    noise_sigma_px = rng.uniform(*lrg["noise_correlation_px"]) if randomized else NOISE_CORRELATION_SIGMA_PX
    controls = lrg_image + correlated_noise(rng, lrg_image.shape, noise_sigma_px) * np.sqrt(noise_var)
    if randomized:  # a residual sky plane: (gx, gy) sky sigma from the centre to the stamp edge
        ramp = (np.arange(size) - size // 2) / (size / 2)
        g = lrg["sky_gradient"][lrg_idx]
        controls += sky * (g[..., 0, None, None] * ramp[None, :] + g[..., 1, None, None] * ramp[:, None])

    rows = np.flatnonzero(np.isin(inj["owner"], lrg_idx))
    local = np.searchsorted(lrg_idx, inj["owner"][rows])
    arc, arc_noise, magnification = render_arcs(rng, inj, rows, kernels[local], gain[local], oversample)
    stamps = controls[local] + (arc + arc_noise)
    sigma_r = sky[local, 1]
    arc_snr = (arc[:, 1] / sigma_r).max(axis=(-2, -1))
    # matched-filter (optimal) integrated SNR of the noiseless arc against sky noise
    arc_snr_sum = np.sqrt(((arc[:, 1] / sigma_r) ** 2).sum(axis=(-2, -1)))

    if randomized:  # masked columns are zero-weight pixels in both images (bad_pixel_frac counts them)
        columns = lrg["masked_columns"][lrg_idx][:, None, None, :]
        controls = np.where(columns, 0.0, controls)
        stamps = np.where(columns[local], 0.0, stamps)
    masked = inj["masked"][rows]
    stamps[masked] = controls[local[masked]]
    arc_snr[masked] = 0.0
    arc_snr_sum[masked] = 0.0
    for i in np.flatnonzero(inj["nan"][rows]):
        n_bad = rng.integers(1, 9)
        stamps[i, rng.integers(0, 3, n_bad), rng.integers(0, size, n_bad), rng.integers(0, size, n_bad)] = np.nan
    return RenderedChunk(controls.astype(np.float32), stamps.astype(np.float32), rows, local, arc_snr, arc_snr_sum,
                         magnification)


def _write_part(table: pa.Table, split_dir: Path, index: int) -> None:
    path = split_dir / f"part-{index:05d}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # a crash never leaves a half-written part that readers would pick up


def simulate_dataset(out_dir, sim: SimulationConfig, *, rows_per_file: int = 1000,
                     oversample: int = DEFAULT_OVERSAMPLE, workers: int | None = None) -> SimulationReport:
    """Write out_dir/{train,val,test}/part-NNNNN.parquet in the §3 schema, as ``sim`` (the config's
    ``simulation`` block) describes; the same config gives the same bytes. Chunks render in ``workers``
    processes (default: the cores this process may use): each chunk draws from its own seeded stream,
    so the bytes do not depend on how many."""
    started = time.perf_counter()
    n_lrg, lrgs_per_brick, seed = dict(sim.n_lrg), sim.lrgs_per_brick, sim.seed
    if sorted(n_lrg) != sorted(SPLITS):
        raise ValueError(f"simulate_dataset: n_lrg keys {sorted(n_lrg)}; want {list(SPLITS)}")
    n_bricks = {s: -(-n_lrg[s] // lrgs_per_brick) for s in SPLITS}
    if n_bricks["train"] < len(MASKED_ARC_BRICKS) + 1 or min(n_bricks.values()) < 1:
        raise ValueError(f"simulate_dataset: bricks per split {n_bricks}; train needs >= 3 "
                         f"(the two masked-arc bricks plus a clean one), val and test >= 1")
    if oversample < 3:
        raise ValueError(f"simulate_dataset: oversample={oversample}; want >= 3 (docs/design.md §4 (simulator))")

    root = Path(out_dir)
    plan = plan_bricks(np.random.default_rng([seed, 0]), n_bricks)
    draws, first_region = [], 0
    for split_index, split in enumerate(SPLITS):
        lrg, inj = draw_split(np.random.default_rng([seed, 1, split_index]), plan[split], n_lrg[split],
                              lrgs_per_brick, sim.injections_per_lrg, first_region, sim.domain_randomization)
        first_region = int(lrg["region_id"].max()) + 1
        draws.append((lrg, inj))
    chunks = [(split_index, chunk_index, start) for split_index, split in enumerate(SPLITS)
              for chunk_index, start in enumerate(range(0, n_lrg[split], _LRG_CHUNK))]
    rows, files = {}, {}
    snr_all = []
    with _render_pool(draws, sim, oversample, workers, len(chunks)) as render, \
            Progress(sum(len(inj["owner"]) for _, inj in draws), "halo simulate", "pairs") as progress:
        rendered = iter(render(_render_part, chunks))
        for split_index, split in enumerate(SPLITS):
            split_dir = root / split
            split_dir.mkdir(parents=True, exist_ok=True)
            pending: list[pa.Table] = []
            n_pending = n_files = 0
            for _ in range(-(-n_lrg[split] // _LRG_CHUNK)):
                table, snr = next(rendered)
                progress.update(len(table))
                pending.append(table)
                n_pending += len(table)
                snr_all.append(snr)
                while n_pending >= rows_per_file:
                    table = pa.concat_tables(pending)
                    _write_part(table.slice(0, rows_per_file), split_dir, n_files)
                    n_files += 1
                    pending, n_pending = [table.slice(rows_per_file)], len(table) - rows_per_file
            if n_pending:
                _write_part(pa.concat_tables(pending), split_dir, n_files)
                n_files += 1
            rows[split], files[split] = len(draws[split_index][1]["owner"]), n_files
    nan_rows = sum(int(inj["nan"].sum()) for _, inj in draws)
    masked_rows = sum(int(inj["masked"].sum()) for _, inj in draws)
    bad_rows = sum(int((lrg["bad_pixel_frac"][inj["owner"]] > 0.2).sum()) for lrg, inj in draws)
    return SimulationReport(
        out_dir=str(root), rows=rows, files=files, nan_rows=nan_rows, masked_arc_rows=masked_rows,
        bad_pixel_rows=bad_rows, seconds=round(time.perf_counter() - started, 3), seed=seed,
        arc_snr_median=float(np.median(np.concatenate(snr_all))))


# What the render workers share, set once per worker by _render_pool: (draws, sim, oversample).
_RENDER_STATE: tuple | None = None


def _set_render_state(state: tuple) -> None:
    global _RENDER_STATE
    _RENDER_STATE = state


def _load_render_state(path: str) -> None:
    _set_render_state(pickle.loads(Path(path).read_bytes()))


def _render_part(chunk: tuple[int, int, int]) -> tuple[pa.Table, np.ndarray]:
    """One chunk of one split as its Arrow table, and the arc SNRs of its unmasked injections."""
    draws, sim, oversample = _RENDER_STATE
    split_index, chunk_index, start = chunk
    lrg, inj = draws[split_index]
    lrg_idx = np.arange(start, min(start + _LRG_CHUNK, len(lrg["ra"])))
    rendered = render_chunk(np.random.default_rng([sim.seed, 2, split_index, chunk_index]), lrg, inj, lrg_idx,
                            oversample)
    return (_chunk_table(SPLITS[split_index], sim, lrg, inj, rendered),
            rendered.arc_snr[~inj["masked"][rendered.rows]])


@contextmanager
def _render_pool(draws, sim: SimulationConfig, oversample: int, workers: int | None, n_chunks: int):
    """A map over chunks, in order: in this process, or in worker processes started fresh (spawn: a
    fork of a process with torch's or Dagster's threads can deadlock)."""
    state = (draws, sim, oversample)
    workers = min(workers or len(os.sched_getaffinity(0)), n_chunks)
    if workers <= 1:
        _set_render_state(state)
        try:
            yield map
        finally:
            _set_render_state(None)
        return
    # The state goes through a file, not the spawn pipe: a worker that dies before reading a pipe larger
    # than its buffer (a script without a __main__ guard re-runs itself in every worker) left the parent
    # blocked on the write forever; with a file it gets BrokenProcessPool, said below.
    with tempfile.TemporaryDirectory(prefix="halo-render-") as tmp:
        path = Path(tmp, "state.pickle")
        path.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_load_render_state, initargs=(str(path),)) as pool:
                yield pool.map
        except BrokenProcessPool as err:
            raise RuntimeError("simulate: a render worker process died (killed, or out of memory). From a script, "
                               "put its top-level code under `if __name__ == \"__main__\":` (each worker imports "
                               "the script, docs.python.org/3/library/multiprocessing.html#the-spawn-and-"
                               "forkserver-start-methods), or pass workers=1") from err


def _chunk_table(split: str, sim: SimulationConfig, lrg, inj, chunk: RenderedChunk) -> pa.Table:
    """One chunk's rows as an Arrow table in SCHEMA order."""
    idx, local = chunk.rows, chunk.local
    owner = inj["owner"][idx]
    control_blobs = [encode_stamp(c) for c in chunk.controls]  # encoded once per LRG, reused by its injections
    q_src = inj["src_q"][idx]
    e_lens = np.hypot(*q_phi_to_e1e2(inj["lens_q"][idx], inj["lens_phi"][idx]))
    n = len(idx)
    columns = {
        "stamp_npz": [encode_stamp(s) for s in chunk.stamps],
        "ctrl_stamp_npz": [control_blobs[i] for i in local],
        "task_id": [f"sim{sim.seed}-{split}-{o:05d}-{k % sim.injections_per_lrg:02d}" for o, k in zip(owner, idx)],
        "brickname": lrg["brickname"][owner].tolist(),
        "ra": lrg["ra"][owner], "dec": lrg["dec"][owner],
        "theta_e_arcsec": inj["theta_e"][idx], "arc_snr": chunk.arc_snr, "arc_snr_sum": chunk.arc_snr_sum,
        "is_control": np.zeros(n, dtype=np.int64),
        "psfsize_r": lrg["psfsize_r"][owner],
        **{f"psf_fwhm_used_{b}": lrg["fwhm"][owner, i] for i, b in enumerate(BANDS)},
        "psfdepth_r": lrg["psfdepth_r"][owner],
        "bad_pixel_frac": lrg["bad_pixel_frac"][owner], "wise_brightmask_frac": lrg["wise_brightmask_frac"][owner],
        "src_dmag": inj["src_dmag"][idx], "src_reff_arcsec": inj["src_reff"][idx],
        "src_e": (1.0 - q_src) / (1.0 + q_src),  # lenstronomy |e|, as lens_e
        "shear": inj["shear"][idx], "lens_e": e_lens, "lens_phi_rad": inj["lens_phi"][idx],
        "magnification": chunk.magnification,
        "cutout_ok": np.ones(n, dtype=np.int64), "ebv": lrg["ebv"][owner],
        "psf_bin": np.digitize(lrg["psfsize_r"][owner], PSF_BIN_EDGES_ARCSEC).astype(np.int64),
        "depth_bin": np.digitize(lrg["psfdepth_r"][owner], DEPTH_BIN_EDGES_MAG).astype(np.int64),
        "region_id": lrg["region_id"][owner].astype(np.int64),
        "experiment_id": [EXPERIMENT_ID] * n, "config_id": [CONFIG_ID_RANDOMIZED if "nb_flux" in lrg else CONFIG_ID] * n, "bandset": ["grz"] * n,
        "stamp_size": np.full(n, STAMP_SIZE, dtype=np.int64), "split": [split] * n,
    }
    return pa.table(columns, schema=SCHEMA)


SIMULATION_FILE = "simulation.json"  # the report, written last: its presence means the dataset is complete


def build_simulated_dataset(out_uri: str, sim: SimulationConfig) -> SimulationReport:
    """:func:`simulate_dataset` staged into ``out_uri`` (local or S3) like the filtered dataset: the
    previous dataset there stays until the new one is complete."""
    with dataset_folder(out_uri, SIMULATION_FILE) as out:
        report = simulate_dataset(out, sim)
        uris.atomic_write_json(str(out / SIMULATION_FILE), report.to_dict())
    return report
