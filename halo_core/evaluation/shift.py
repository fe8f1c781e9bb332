"""The shift suite (docs/design.md §8 (trust)): test sets made outside the training distribution, each with its own lenses
and non-lenses and its own threshold at the operating FPR (`operating_fpr`, 1e-2 by default).

- ``independent``: rendered by another code base (lenstronomy) with its own models: a power-law (SPEP)
  mass instead of the SIE, Sersic sources with Gaussian star-forming clumps, de Vaucouleurs deflectors with
  companions 1.5-5" away in half the fields, Gaussian PSFs, white noise. Only the LRG photometry is shared
  (it comes from the real catalogue). The blocking robustness check reads this set.
- one set per stress axis, rendered by our simulator at its nominal settings with that one axis moved:
  ``compact_sources`` (r_eff 0.03-0.2"), ``crowded_fields`` (1-3 companions of r 20-23 within 1.5-4"),
  ``psf_extremes`` (r-band FWHM 1.6-2.2"), ``faint_arcs`` (arc SNR 2-5). Their difficulty differs by
  design (faint arcs are expected to lose completeness); the report shows how much.

Lenses are stamps of one set of LRGs, non-lenses the controls of others. Fixed seeds; never used for
training or for choosing parameters. Calibrated probabilities hold in-distribution only: each set reports
its raw (uncalibrated) ECE and the ECE of the calibration in use.
"""

from __future__ import annotations

import math

import numpy as np

from halo_core.data.preprocess import preprocess
from halo_core.data.stamps import PIXEL_SCALE_ARCSEC, STAMP_SIZE
from halo_core.evaluation.calibration import expected_calibration_error, sigmoid
from halo_core.evaluation.results import InDistribution, ShiftLimits, ShiftSet, ShiftSuite
from halo_core.metrics import auroc, tpr_at_fpr
from halo_core.model.engine import Engine
from halo_core.simulate.catalog import draw_lrg_mags, mag_to_flux_nmgy
from halo_core.simulate.dataset import (
    _LRG_CHUNK,
    PSF_FWHM_ARCSEC,
    SKY_SIGMA_NMGY,
    _draw_field,
    draw_split,
    render_chunk,
)
from halo_core.simulate.lens import q_phi_to_e1e2
from halo_core.simulate.source import sersic_amplitude

INDEPENDENT = "independent"
STRESS_SETS = ("compact_sources", "crowded_fields", "psf_extremes", "faint_arcs")
SHIFT_SETS = (INDEPENDENT, *STRESS_SETS)


def _stress_recipe(name: str, rng: np.random.Generator, lrg: dict, inj: dict) -> None:
    """Move one axis of the nominal simulator's draw (in place)."""
    n_lrg, n_inj = len(lrg["reff"]), len(inj["theta_e"])
    if name == "compact_sources":
        inj["src_reff"] = rng.uniform(0.03, 0.2, n_inj)
    elif name == "crowded_fields":
        field = _draw_field(rng, n_lrg)
        n_nb = rng.integers(1, 4, n_lrg)
        radius = rng.uniform(1.5, 4.0, field["nb_x"].shape)
        angle = rng.uniform(0.0, 2 * np.pi, radius.shape)
        r_mag = rng.uniform(20.0, 23.0, radius.shape)
        colour = field["nb_flux"] / np.maximum(field["nb_flux"][..., 1:2], 1e-30)  # keep each neighbour's colours
        flux = colour * mag_to_flux_nmgy(r_mag)[..., None]
        flux[np.arange(radius.shape[1])[None, :] >= n_nb[:, None]] = 0.0
        field.update(nb_x=radius * np.cos(angle), nb_y=radius * np.sin(angle), nb_flux=flux,
                     star_flux=np.zeros_like(field["star_flux"]), sky_gradient=np.zeros_like(field["sky_gradient"]),
                     masked_columns=np.zeros_like(field["masked_columns"]), noise_correlation_px=(0.5, 0.5))
        lrg.update(field)
    elif name == "psf_extremes":
        fwhm_r = rng.uniform(1.6, 2.2, n_lrg)
        lrg["fwhm"] = fwhm_r[:, None] * (PSF_FWHM_ARCSEC / PSF_FWHM_ARCSEC[1])[None, :]
        lrg["psfsize_r"] = fwhm_r
    elif name != "faint_arcs":
        raise ValueError(f"unknown stress set {name!r} (known: {', '.join(STRESS_SETS)})")


def render_stress_set(name: str, n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (2n, 3, 64, 64) nmgy, labels, lrg id): the first n LRGs' stamps, the other n's controls."""
    rng = np.random.default_rng([seed, SHIFT_SETS.index(name)])
    n = 2 * n_per_class
    lrg, inj = draw_split(rng, [("shift", 0.0, 0.0)], n, n, 1, 0)
    inj["masked"][:] = inj["nan"][:] = False
    _stress_recipe(name, rng, lrg, inj)
    if name == "faint_arcs":  # scale each arc to a target max-pixel SNR (the Poisson part is negligible)
        snr = _render(np.random.default_rng(0), lrg, inj)[2]
        inj["src_flux"] = inj["src_flux"] * (rng.uniform(2.0, 5.0, n) / np.maximum(snr, 1e-9))[:, None]
    controls, stamps, _ = _render(rng, lrg, inj)
    lens = np.arange(n) < n_per_class
    return np.where(lens[:, None, None, None], stamps, controls), lens.astype(int), np.arange(n)


def _render(rng, lrg, inj):
    controls, stamps, snrs = [], [], []
    for start in range(0, len(lrg["reff"]), _LRG_CHUNK):
        idx = np.arange(start, min(start + _LRG_CHUNK, len(lrg["reff"])))
        chunk = render_chunk(rng, lrg, inj, idx, oversample=3)
        controls.append(chunk.controls)
        stamps.append(chunk.stamps)
        snrs.append(chunk.arc_snr)
    return np.concatenate(controls), np.concatenate(stamps), np.concatenate(snrs)


def render_independent_set(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lenstronomy-rendered set: (images (2n, 3, 64, 64) nmgy, labels, lrg id)."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    rng = np.random.default_rng([seed, SHIFT_SETS.index(INDEPENDENT)])
    n = 2 * n_per_class
    half = STAMP_SIZE // 2
    data = ImageData(image_data=np.zeros((STAMP_SIZE, STAMP_SIZE)), ra_at_xy_0=-half * PIXEL_SCALE_ARCSEC,
                     dec_at_xy_0=-half * PIXEL_SCALE_ARCSEC, transform_pix2angle=np.diag([PIXEL_SCALE_ARCSEC] * 2))
    numerics = {"supersampling_factor": 3, "supersampling_convolution": False}
    lens_model = LensModel(["SPEP", "SHEAR"])
    mags = draw_lrg_mags(rng, n)
    fwhm_r = rng.uniform(1.0, 1.7, n)
    band_ratio = np.stack([rng.uniform(1.05, 1.2, n), np.ones(n), rng.uniform(0.85, 0.95, n)], axis=1)
    sky = rng.uniform(SKY_SIGMA_NMGY[:, 0], SKY_SIGMA_NMGY[:, 1], (n, 3))
    images = np.empty((n, 3, STAMP_SIZE, STAMP_SIZE), np.float32)
    for i in range(n):
        lens = i < n_per_class
        q, phi = rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
        e1, e2 = q_phi_to_e1e2(q, phi)
        reff = rng.uniform(0.5, 2.0)
        light = [("SERSIC_ELLIPSE", mags[i], {"R_sersic": reff, "n_sersic": 4.0, "e1": e1, "e2": e2,
                                              "center_x": 0.0, "center_y": 0.0})]
        for _ in range(rng.integers(1, 3) if rng.random() < 0.5 else 0):  # companions
            r, a = rng.uniform(1.5, 5.0), rng.uniform(0, 2 * np.pi)
            ce1, ce2 = q_phi_to_e1e2(rng.uniform(0.4, 1.0), rng.uniform(0, np.pi))
            c_r = rng.uniform(20.0, 23.0)
            c_mags = np.array([c_r + rng.uniform(0.3, 1.8), c_r, c_r - rng.uniform(0.1, 1.2)])
            light.append(("SERSIC_ELLIPSE", c_mags, {"R_sersic": rng.uniform(0.2, 0.8), "n_sersic": rng.uniform(1, 4),
                                                     "e1": ce1, "e2": ce2, "center_x": r * np.cos(a),
                                                     "center_y": r * np.sin(a)}))
        source = []
        if lens:
            theta_e = rng.uniform(0.6, 2.2)
            le1, le2 = q_phi_to_e1e2(np.clip(q + rng.normal(0, 0.05), 0.4, 0.98), phi)
            g1, g2 = rng.normal(0, 0.03, 2)
            kwargs_lens = [{"theta_E": theta_e, "gamma": rng.uniform(1.8, 2.2), "e1": le1, "e2": le2,
                            "center_x": 0.0, "center_y": 0.0}, {"gamma1": g1, "gamma2": g2, "ra_0": 0, "dec_0": 0}]
            b, a = 0.8 * theta_e * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            sx, sy = b * np.cos(a), b * np.sin(a)
            s_r = rng.uniform(21.0, 23.5)
            s_mags = np.array([s_r + rng.uniform(0.0, 0.5), s_r, s_r - rng.uniform(-0.1, 0.5)])
            clump_share = rng.uniform(0.0, 0.5)
            se1, se2 = q_phi_to_e1e2(rng.uniform(0.4, 1.0), rng.uniform(0, np.pi))
            s_reff = rng.uniform(0.05, 0.6)
            source.append(("SERSIC_ELLIPSE", s_mags - 2.5 * np.log10(1 - clump_share),
                           {"R_sersic": s_reff, "n_sersic": rng.uniform(0.5, 1.5), "e1": se1, "e2": se2,
                            "center_x": sx, "center_y": sy}))
            n_clumps = rng.integers(1, 4)
            for _ in range(n_clumps):
                d, t = s_reff * rng.random(), rng.uniform(0, 2 * np.pi)
                source.append(("GAUSSIAN", s_mags - 2.5 * np.log10(max(clump_share, 1e-6) / n_clumps),
                               {"sigma": rng.uniform(0.03, 0.1), "center_x": sx + d * np.cos(t),
                                "center_y": sy + d * np.sin(t)}))
        else:
            kwargs_lens = [{"theta_E": 1.0, "gamma": 2.0, "e1": 0.0, "e2": 0.0, "center_x": 0.0, "center_y": 0.0},
                           {"gamma1": 0.0, "gamma2": 0.0, "ra_0": 0, "dec_0": 0}]
        for band in range(3):
            psf = PSF(psf_type="GAUSSIAN", fwhm=fwhm_r[i] * band_ratio[i, band], pixel_size=PIXEL_SCALE_ARCSEC)
            lens_light = LightModel([p for p, _, _ in light])
            source_light = LightModel([p for p, _, _ in source]) if source else None
            model = ImageModel(data, psf, lens_model_class=lens_model, source_model_class=source_light,
                               lens_light_model_class=lens_light, kwargs_numerics=numerics)
            kw_light = [_with_flux(p, m[band], kw) for p, m, kw in light]
            kw_source = [_with_flux(p, m[band], kw) for p, m, kw in source]
            clean = model.image(kwargs_lens, kw_source, kw_light, source_add=bool(source))
            noise = np.sqrt(sky[i, band] ** 2 + np.clip(clean, 0, None) / 4000.0)
            images[i, band] = clean + rng.standard_normal(clean.shape) * noise
    return images, (np.arange(n) < n_per_class).astype(int), np.arange(n)


def _with_flux(profile: str, mag: float, kwargs: dict) -> dict:
    """lenstronomy amplitude for a total flux: Sersic 'amp' is the surface brightness at R_sersic, a
    Gaussian's is its total flux."""
    flux = float(mag_to_flux_nmgy(mag))
    if profile == "GAUSSIAN":
        return {"amp": flux, **kwargs}
    return {"amp": float(sersic_amplitude(flux, kwargs["R_sersic"], kwargs["n_sersic"])), **kwargs}


def render_shift_set(name: str, n_per_class: int, seed: int):
    return render_independent_set(n_per_class, seed) if name == INDEPENDENT else render_stress_set(name, n_per_class, seed)


def score_images(engine: Engine, images: np.ndarray, spec) -> np.ndarray:
    """Logits of (N, 3, 64, 64) nmgy images, preprocessed with the model's spec."""
    return engine.logits(images, prepare=lambda batch: preprocess(batch, spec))


def shift_metrics(labels: np.ndarray, logits: np.ndarray, probability, in_distribution: InDistribution,
                  operating_fpr: float) -> ShiftSet:
    """AUROC, TPR at the operating FPR with its own threshold and n, raw and calibrated ECE, and the drops."""
    probs = probability(logits)
    point = tpr_at_fpr(labels, probs, operating_fpr)
    a = auroc(labels, probs)

    def drop(ref, value):
        return None if value is None or ref is None or (isinstance(ref, float) and math.isnan(ref)) else ref - value

    calibrated = expected_calibration_error(probs, labels)
    return ShiftSet(int(len(labels)), int(labels.sum()), int((labels == 0).sum()), a, point["tpr"], point["threshold"],
                    point["measurable"], expected_calibration_error(sigmoid(logits), labels).ece, calibrated.ece,
                    auroc_drop=drop(in_distribution.auroc, a),
                    tpr_drop=drop(in_distribution.tpr_at_operating_fpr, point["tpr"]), reliability=calibrated.bins)


def shift_suite(engine: Engine, spec, probability, in_distribution: InDistribution, cfg_shift, with_control: bool,
                operating_fpr: float) -> ShiftSuite:
    """Every shift set scored by the model, at the operating FPR, against the test split's ``in_distribution``."""
    limits = ShiftLimits(cfg_shift.min_independent_tpr, cfg_shift.max_independent_drop, cfg_shift.max_stress_drop,
                         cfg_shift.max_raw_ece)
    if with_control:
        return ShiftSuite(False, "the model needs a control stamp, which these sets do not give it", {},
                          in_distribution, limits, cfg_shift.seed, operating_fpr=operating_fpr)
    sets = {}
    for name in SHIFT_SETS:
        images, labels, _ = render_shift_set(name, cfg_shift.n_per_class, cfg_shift.seed)
        sets[name] = shift_metrics(labels, score_images(engine, images, spec), probability, in_distribution,
                                   operating_fpr)
    return ShiftSuite(True, "", sets, in_distribution, limits, cfg_shift.seed, cfg_shift.n_per_class, operating_fpr)
