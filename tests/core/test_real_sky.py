"""The real-sky validation set and the plan's purity target: the six shared real cutouts as lenses and LRG
cutouts fetched from the loopback stand-in service as non-lenses (mechanics, not science)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from halo_core.cli import main
from halo_core.config import load_preset
from halo_core.data.known_lenses import crossmatch
from halo_core.errors import ContractError
from halo_core.evaluation.real_sky import (
    build_real_sky_set,
    nonlenses_needed,
    purity_target,
    required_fpr,
    validation_bricks,
)
from halo_core.evaluation.results import Rate, ValidationReport
from halo_core.evaluation.validation import VALIDATION_JSON
from halo_core.records import from_json
from halo_core.simulate.injection import assign_splits, read_cutouts
from halo_core.survey.cutouts import FetchPolicy, fetch_cutouts, targets
from tests.cutout_service import CutoutService

ARCSEC = 1 / 3600


def test_the_plans_target_needs_fpr_3e_4_and_a_set_that_can_show_it():
    assert required_fpr(1e-3, 0.9, 0.75) == pytest.approx(1e-3 * 0.9 * 0.25 / (0.75 * 0.999)) == pytest.approx(3e-4, rel=0.01)
    assert nonlenses_needed(3.0e-4) == pytest.approx(12_800, rel=0.01)
    recall = Rate.of(90, 100)
    # ~1,365 test-brick LRGs of the 6,826: no false positive still cannot show FPR <= 3e-4
    small = purity_target(recall, Rate.of(0, 1365), prevalence=1e-3, purity=0.75)
    assert not small.measurable and not small.passed and "12,789 non-lenses" in small.status
    assert small.fpr_ci95[1] > small.required_fpr
    big = purity_target(recall, Rate.of(0, 20_000), prevalence=1e-3, purity=0.75)
    assert big.status == "met" and big.passed
    bad = purity_target(recall, Rate.of(50, 1000), prevalence=1e-3, purity=0.75)
    assert bad.status == "not met" and bad.measurable and not bad.passed
    standin = purity_target(recall, None, prevalence=1e-3, purity=0.75)
    assert "not measurable" in standin.status and "stand-ins" in standin.status and standin.required_fpr is None


@pytest.fixture(scope="module")
def lrg_cutouts(fixtures, tmp_path_factory):
    """LRG cutouts fetched from the stand-in service: around each real cutout's position one LRG 3" away
    (within 5" of its known lens: never a validation non-lens) and three 10-30" away, served the real
    cutout's pixels."""
    pytest.importorskip("lenscat")
    lenses = read_cutouts(fixtures)
    rows, images = [], {}
    for lens in lenses:
        ra, dec = float(lens.meta["ra"]), float(lens.meta["dec"])
        for offset in (3, 10, 20, 30):
            rows.append((ra, dec + offset * ARCSEC))
            images[(round(ra, 4), round(dec + offset * ARCSEC, 4))] = lens.cutout
    out = tmp_path_factory.mktemp("lrg") / "lrg_cutouts"
    with CutoutService(images) as service:
        report = fetch_cutouts(targets(pd.DataFrame({"ra": [r for r, _ in rows], "dec": [d for _, d in rows]}), "lrgs"),
                               str(out), FetchPolicy(base_url=service.url, backoff_s=0.01))
    assert report.states["fetched"] == len(rows)
    return str(out)


def _cfg(fixtures, lrg_cutouts, **extra):
    return load_preset("smoke", {"lrg_cutouts_path": lrg_cutouts, "real_validation": {"lenses_path": fixtures},
                                 "real_sky": {"validation": True, **extra}})


def test_real_sky_non_lenses_are_test_brick_lrgs_away_from_known_lenses(fixtures, lrg_cutouts):
    cfg = _cfg(fixtures, lrg_cutouts)
    sky = build_real_sky_set(cfg)
    every = read_cutouts(lrg_cutouts)
    split_of = assign_splits([c.meta["brickname"] for c in every], {"val": 0.15, "test": 0.2}, cfg.injection.seed)
    test = {b for b, s in split_of.items() if s == "test"}
    assert validation_bricks(lrg_cutouts, cfg.injection) == test  # paired_stamps' own split
    in_test = [c for c in every if c.meta["brickname"] in test]
    assert sky.counts.lrgs_in_test_bricks == len(in_test) and len(sky.nonlenses) > 0
    assert {c.meta["brickname"] for c in sky.nonlenses} <= test
    near = crossmatch([c.meta["ra"] for c in in_test], [c.meta["dec"] for c in in_test], 5.0)["known_lens_name"].notna()
    assert sky.counts.lrgs_dropped_near_known_lens == int(near.sum()) >= 1
    assert len(sky.nonlenses) == len(in_test) - int(near.sum())
    assert len(sky.lenses) == 6 and sky.gradings == ["probable"] * 6  # the six are lenscat "probable" entries
    with pytest.raises(ContractError, match="both are needed"):
        build_real_sky_set(_cfg(fixtures, lrg_cutouts, gradings=["confident"]))


def test_halo_validate_real_sky_reports_gradings_and_the_purity_target(trained, evaluated, fixtures, lrg_cutouts,
                                                                       tmp_path, capsys):
    points = [{"fpr": f, "tpr": 0.9 if f == 1e-2 else None, "threshold": 0.5 if f == 1e-2 else None,
               "measurable": f == 1e-2, "n_negatives": 500, "n_distinct_negatives": 500} for f in (1e-2, 1e-3, 1e-4)]
    (tmp_path / "report.json").write_text(json.dumps({**evaluated[1].to_dict(), "metrics": {"tpr_at_fpr": points}}))
    (tmp_path / "cal.json").write_text(json.dumps({"method": "platt", "a": 1.0, "b": 0.0, "train_prevalence": 0.5,
                                                   "n_fit": 10}))
    code = main(["validate", "--real-sky", "--preset", "smoke", "--model", trained.model_path, "--lenses", fixtures,
                 "--set", f"lrg_cutouts_path={lrg_cutouts}", "--report", str(tmp_path / "report.json"),
                 "--calibration", str(tmp_path / "cal.json"), "--out", str(tmp_path / "v")])
    out = capsys.readouterr().out
    assert code == 0
    saved = from_json(ValidationReport, json.loads((tmp_path / "v" / VALIDATION_JSON).read_text()))
    assert saved.nonlenses_label.startswith("real LRGs of the test-split bricks")
    assert list(saved.recall_by_grading) == ["probable"]
    assert saved.recall_by_grading["probable"][0].recall.n == 6
    target, operating = saved.purity_target_check, saved.operating
    assert target.n_nonlenses == saved.n_nonlenses == operating.fpr_real.n < target.nonlenses_needed
    assert target.recall == operating.recall.rate
    lo, hi = target.fpr_ci95
    assert target.status.startswith("met" if hi <= target.required_fpr else "not met"
                                    if lo > target.required_fpr else "not measurable")
    assert "probable: recall@FPR 0.01" in out and f"sim-to-real purity 0.75: {target.status}" in out

def test_real_sky_needs_its_folders(tmp_path):
    from halo_core.errors import ConfigError

    with pytest.raises(ConfigError, match="need lrg_cutouts_path"):
        load_preset("smoke", {"real_sky": {"validation": True}})
    with pytest.raises(ContractError, match="needs real lens cutouts"):
        build_real_sky_set(load_preset("smoke", {"lrg_cutouts_path": str(tmp_path)}))
