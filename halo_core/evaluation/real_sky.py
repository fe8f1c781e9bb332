"""The real-sky validation set and the plan's Q3 target, "sim-to-real purity > 75 %" (docs/design.md §8 (trust)).

- Positives: the real lens cutouts (``real_validation.lenses_path``, e.g. fetched by ``halo cutouts
  --lenscat``), each with its lenscat grading (``meta_grading`` where the fetch stored it, else the
  nearest lenscat entry within ``known_lens_radius_arcsec``), reported per grading: a "probable"
  candidate is not a confirmed lens.
- Non-lenses: the fetched LRG cutouts (``lrg_cutouts_path``) of the *test-split bricks only*, split by
  the same function and seed as paired_stamps' injected mode (``assign_splits``), so no validation
  galaxy was ever trained on; an LRG within ``nonlens_min_separation_arcsec`` of any known lens is
  dropped and counted.
- The target made explicit: purity P at prevalence pi and recall R needs
  FPR <= pi R (1 - P) / (P (1 - pi)) (~3e-4 at pi = 1e-3, R = 0.9, P = 0.75). The measured FPR's Wilson
  upper bound is set against it; when the interval straddles it, the answer is "not measurable",
  with the number of non-lenses that would resolve it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from halo_core.data.known_lenses import crossmatch
from halo_core.errors import ContractError
from halo_core.evaluation.results import GradingRecall, OperatingPoint, PurityTarget, Rate, RealSkyCounts
from halo_core.simulate.injection import RealCutout, assign_splits, bricks_by_file, read_cutouts

Z_95 = 1.96
UNGRADED = "not in lenscat"


@dataclass
class RealSkySet:
    lenses: list[RealCutout]
    gradings: list[str]  # one per lens
    nonlenses: list[RealCutout]
    counts: RealSkyCounts


def validation_bricks(lrg_cutouts_path: str, injection) -> set[str]:
    """The bricks paired_stamps' injected mode puts in the test split, from the cutouts' metadata alone."""
    bricks = [b for _, file_bricks in bricks_by_file(lrg_cutouts_path) for b in file_bricks]
    split_of = assign_splits(bricks, {"val": injection.val_fraction, "test": injection.test_fraction}, injection.seed)
    return {b for b, split in split_of.items() if split == "test"}


def lens_gradings(lenses: list[RealCutout], radius_arcsec: float) -> list[str]:
    """Each lens's lenscat grading: the one its fetch stored, else the nearest entry's within the radius."""
    ra = [float(c.meta["ra"]) for c in lenses]
    dec = [float(c.meta["dec"]) for c in lenses]
    matched = crossmatch(ra, dec, radius_arcsec)["known_lens_grading"].tolist()
    return [str(c.meta.get("grading") or m or UNGRADED) for c, m in zip(lenses, matched)]


def build_real_sky_set(cfg, lenses_path: str | None = None) -> RealSkySet:
    """Lenses of the configured gradings and test-brick LRG non-lenses away from every known lens."""
    lenses_path = lenses_path or cfg.real_validation.lenses_path
    if not lenses_path or not cfg.lrg_cutouts_path:
        raise ContractError("real-sky validation needs real lens cutouts (real_validation.lenses_path or --lenses, "
                            "e.g. `halo cutouts --lenscat`) and LRG cutouts (lrg_cutouts_path, `halo cutouts "
                            "--catalog`)")
    lenses = read_cutouts(lenses_path)
    gradings = lens_gradings(lenses, cfg.real_validation.known_lens_radius_arcsec)
    keep = [g in cfg.real_sky.gradings for g in gradings]
    bricks = validation_bricks(cfg.lrg_cutouts_path, cfg.injection)
    candidates = read_cutouts(cfg.lrg_cutouts_path, bricks=bricks)
    near = crossmatch([float(c.meta["ra"]) for c in candidates], [float(c.meta["dec"]) for c in candidates],
                      cfg.real_sky.nonlens_min_separation_arcsec)["known_lens_name"].notna().to_numpy()
    if not any(keep) or near.all():
        raise ContractError(f"real-sky set: {sum(keep)} lenses of gradings {cfg.real_sky.gradings} and "
                            f"{int((~near).sum())} non-lenses in test bricks {sorted(bricks)}: both are needed")
    counts = RealSkyCounts(
        n_lenses=sum(keep), n_nonlenses=int((~near).sum()), lenses_read=len(lenses),
        lenses_dropped_by_grading={g: gradings.count(g) for g in sorted(set(gradings)) if g not in cfg.real_sky.gradings},
        test_bricks=sorted(bricks), lrgs_in_test_bricks=len(candidates), lrgs_dropped_near_known_lens=int(near.sum()),
        nonlens_min_separation_arcsec=cfg.real_sky.nonlens_min_separation_arcsec)
    return RealSkySet([c for c, k in zip(lenses, keep) if k], [g for g, k in zip(gradings, keep) if k],
                      [c for c, n in zip(candidates, near) if not n], counts)


def required_fpr(prevalence: float, recall: float, purity: float) -> float:
    """The largest FPR at which a finder of this recall reaches ``purity`` at ``prevalence``."""
    return prevalence * recall * (1 - purity) / (purity * (1 - prevalence))


def nonlenses_needed(fpr: float) -> int:
    """Non-lenses at which zero false positives put the FPR's Wilson 95 % upper bound, z^2 / (n + z^2),
    at ``fpr``: the fewest that can show an FPR this small."""
    return math.ceil(Z_95 ** 2 * (1 - fpr) / fpr)


def purity_target(recall: Rate | None, fpr_real: Rate | None, *, prevalence: float, purity: float) -> PurityTarget:
    """The plan's target at the operating threshold: the required FPR, the measured FPR with its Wilson
    interval against it, and a status: met, not met, or not measurable (with the n it would need)."""
    if not recall or not fpr_real or not recall.rate:
        why = ("no real recall at a measurable operating threshold" if not recall or not recall.rate else
               "no real non-lenses (stand-ins measure no FPR of real galaxies)")
        return PurityTarget(f"not measurable: {why}", False, False, purity, prevalence)
    need = required_fpr(prevalence, recall.rate, purity)
    lo, hi = fpr_real.ci95
    needed = nonlenses_needed(need)
    if hi <= need:
        status, measurable, passed = "met", True, True
    elif lo > need:
        status, measurable, passed = "not met", True, False
    else:
        status, measurable, passed = (f"not measurable: the FPR's 95 % interval [{lo:.2g}, {hi:.2g}] from "
                                      f"{fpr_real.n} real non-lenses straddles the required {need:.2g}; about "
                                      f"{needed:,} non-lenses (with no false positive) would resolve it"), False, False
    return PurityTarget(status, measurable, passed, purity, prevalence, recall.rate, need, fpr_real.rate, (lo, hi),
                        fpr_real.n, needed)


def recall_by_grading(probs: np.ndarray, gradings: list[str],
                      points: list[OperatingPoint]) -> dict[str, list[GradingRecall]]:
    """Recall with Wilson intervals per lenscat grading at each measurable threshold."""
    out = {}
    for grading in sorted(set(gradings)):
        mine = probs[np.asarray(gradings) == grading]
        out[grading] = [GradingRecall(p.fpr, Rate.of(int((mine >= p.threshold).sum()), len(mine)) if p.measurable
                                      else None) for p in points]
    return out
