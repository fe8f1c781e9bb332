"""Simulator throughput vs lenstronomy on the same systems; prints one JSON line.

Both sides render the noiseless g, r, z model (Sersic LRG + SIE+shear-lensed Sersic source,
3x3 supersampling, the same 33x33 Moffat pixel kernel per band) for the same N systems; ours
renders them as one vectorised batch, lenstronomy with one ImageModel.image() call per band.
Also times the full generator (noise, npz encoding, parquet) end to end. Single thread.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core, so the comparison is per core

import argparse
import json
import platform
import tempfile
import time

import numpy as np

from halo_core.config import SimulationConfig
from halo_core.data.stamps import PIXEL_SCALE_ARCSEC as PIX
from halo_core.data.stamps import STAMP_SIZE
from halo_core.simulate import simulate_dataset
from halo_core.simulate.catalog import mag_to_flux_nmgy
from halo_core.simulate.dataset import draw_split, plan_bricks
from halo_core.simulate.lens import q_phi_to_e1e2
from halo_core.simulate.psf import convolve, moffat_kernel
from halo_core.simulate.source import render_lensed_sersic, render_sersic, sersic_amplitude

OVERSAMPLE = 3


def draw_systems(n: int, seed: int):
    """n systems with the generator's own distributions (one injection per LRG)."""
    bricks = plan_bricks(np.random.default_rng(seed), {"train": 3, "val": 1, "test": 1})["val"]
    return draw_split(np.random.default_rng(seed), bricks, n, lrgs_per_brick=n, injections_per_lrg=1, first_region=0)


def render_ours(lrg, inj, oversample: int = OVERSAMPLE) -> np.ndarray:
    """(N, 3, 64, 64) noiseless model stamps, vectorised over systems."""
    kernels = moffat_kernel(lrg["fwhm"] / PIX)
    lrg_shape = render_sersic(np.ones(len(lrg["reff"])), lrg["reff"], lrg["n"], lrg["q"], lrg["phi"],
                              size_px=STAMP_SIZE, pixel_scale_arcsec=PIX, oversample=oversample)
    arc_shape = render_lensed_sersic(
        np.ones(len(inj["theta_e"])), inj["src_reff"], inj["src_n"], inj["src_q"], inj["src_phi"], inj["src_x"],
        inj["src_y"], inj["theta_e"], inj["lens_q"], inj["lens_phi"], inj["gamma1"], inj["gamma2"],
        size_px=STAMP_SIZE, pixel_scale_arcsec=PIX, oversample=oversample)
    lrg_flux = mag_to_flux_nmgy(lrg["mags"]).astype(np.float32)  # float32 keeps the FFTs single precision
    model = (lrg_shape[:, None] * lrg_flux[:, :, None, None]
             + arc_shape[:, None] * inj["src_flux"].astype(np.float32)[:, :, None, None])
    return convolve(model, kernels)


def render_lenstronomy(lrg, inj, oversample: int = OVERSAMPLE) -> np.ndarray:
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    # pixel (32, 32) at the origin and x along columns, as in our stamps
    data = ImageData(image_data=np.zeros((STAMP_SIZE, STAMP_SIZE)), ra_at_xy_0=-32 * PIX, dec_at_xy_0=-32 * PIX,
                     transform_pix2angle=np.diag([PIX, PIX]))
    lens_model, sersic = LensModel(["SIE", "SHEAR"]), LightModel(["SERSIC_ELLIPSE"])
    numerics = {"supersampling_factor": oversample, "supersampling_convolution": False}
    kernels = moffat_kernel(lrg["fwhm"] / PIX)
    lrg_flux = mag_to_flux_nmgy(lrg["mags"])
    out = np.empty((len(inj["theta_e"]), 3, STAMP_SIZE, STAMP_SIZE))
    for i in range(len(inj["theta_e"])):
        e1, e2 = q_phi_to_e1e2(inj["lens_q"][i], inj["lens_phi"][i])
        kwargs_lens = [{"theta_E": inj["theta_e"][i], "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0},
                       {"gamma1": inj["gamma1"][i], "gamma2": inj["gamma2"][i], "ra_0": 0.0, "dec_0": 0.0}]
        se1, se2 = q_phi_to_e1e2(inj["src_q"][i], inj["src_phi"][i])
        le1, le2 = q_phi_to_e1e2(lrg["q"][i], lrg["phi"][i])
        for band in range(3):
            model = ImageModel(data, PSF(psf_type="PIXEL", kernel_point_source=kernels[i, band]),
                               lens_model_class=lens_model, source_model_class=sersic,
                               lens_light_model_class=sersic, kwargs_numerics=numerics)
            kwargs_source = [{"amp": sersic_amplitude(inj["src_flux"][i, band], inj["src_reff"][i], inj["src_n"][i]),
                              "R_sersic": inj["src_reff"][i], "n_sersic": inj["src_n"][i], "e1": se1, "e2": se2,
                              "center_x": inj["src_x"][i], "center_y": inj["src_y"][i]}]
            kwargs_light = [{"amp": sersic_amplitude(lrg_flux[i, band], lrg["reff"][i], lrg["n"][i]),
                             "R_sersic": lrg["reff"][i], "n_sersic": lrg["n"][i], "e1": le1, "e2": le2,
                             "center_x": 0.0, "center_y": 0.0}]
            out[i, band] = model.image(kwargs_lens, kwargs_source, kwargs_light)
    return out


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=1200, help="pairs for the end-to-end generator timing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import lenstronomy

    lrg, inj = draw_systems(args.systems, args.seed)
    ours = render_ours(lrg, inj)
    render_lenstronomy(*draw_systems(2, args.seed + 1))  # warm-up: lenstronomy's first call pays import/caching costs
    t0 = time.perf_counter()
    theirs = render_lenstronomy(lrg, inj)
    t_lenstronomy = time.perf_counter() - t0
    t_ours = best_time(lambda: render_ours(lrg, inj), 3)
    peak = theirs.max(axis=(-2, -1))
    rel_diff = (np.abs(ours - theirs).max(axis=(-2, -1)) / peak).max()

    n_lrg = args.pairs // 4
    with tempfile.TemporaryDirectory() as tmp:
        split_lrgs = {"train": n_lrg * 6 // 10, "val": n_lrg * 2 // 10, "test": n_lrg - n_lrg * 8 // 10}
        report = simulate_dataset(tmp, SimulationConfig(n_lrg=split_lrgs, lrgs_per_brick=10, seed=args.seed,
                                                        domain_randomization=False))
    print(json.dumps({
        "benchmark": "simulator",
        "systems": args.systems, "bands": 3, "stamp_size": STAMP_SIZE, "supersampling": OVERSAMPLE,
        "psf_kernel_px": int(moffat_kernel(4.0).shape[-1]),
        "ours_stamps_per_s": round(args.systems / t_ours, 1),
        "lenstronomy_stamps_per_s": round(args.systems / t_lenstronomy, 1),
        "speedup": round(t_lenstronomy / t_ours, 1),
        "max_rel_diff_to_peak": float(f"{rel_diff:.3g}"),
        "generator_pairs": sum(report.rows.values()), "generator_seconds": report.seconds,
        "generator_pairs_per_s": round(sum(report.rows.values()) / report.seconds, 1),
        "generator_arc_snr_median": round(report.arc_snr_median, 2),
        "threads": 1, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "numpy": np.__version__, "lenstronomy": lenstronomy.__version__,
    }))


if __name__ == "__main__":
    main()
