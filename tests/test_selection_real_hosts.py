"""The selection function with lenses injected into real DR10 hosts: the PSF and depth axes are bins of
each host's measured values, one injection per host per cell, thin cells reported as not measurable,
and in the graph only the test split's hosts (the six fixtures are lens candidates: fine for the
mechanics, not for science)."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest

from halo_assets.resources import PROFILES, HaloSettings
from halo_assets.survey import selection_function as selection_function_asset
from halo_core.config import load_preset
from halo_core.evaluation.calibration import Calibration
from halo_core.model.registry import add_version, set_production
from halo_core.records import from_json
from halo_core.simulate.injection import inject_dataset, read_cutouts
from halo_core.survey.scoring import ScoringModel
from halo_core.survey.selection import (
    AXES,
    SELECTION_JSON,
    Cell,
    RealHostInjections,
    SelectionFunction,
    selection_function,
    write_report,
)
from tests.conftest import REAL_CUTOUTS

PSF_EDGES, DEPTH_EDGES = [1.2, 1.35, 1.5], [24.4, 24.7, 25.0]  # the paired schema's psf_bin / depth_bin
GRID = {"theta_e_arcsec": [0.8, 2.0], "source_r_mag": [20.5, 23.5], "injections_per_cell": 3, "seed": 5}


@pytest.fixture(scope="module")
def hosts(fixtures, tmp_path_factory):
    """The six fixtures (no PSF or depth in their metadata) and a copy of one whose metadata says
    psfsize 1.6" and psfdepth_r 24.5."""
    folder = tmp_path_factory.mktemp("seeing")
    with np.load(sorted(REAL_CUTOUTS.glob("*.npz"))[0], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(meta_galaxy_id=np.array("bad_seeing"), meta_brickname=np.array("0100p000"),
                  meta_psfdepth_r=np.array(24.5), **{f"meta_psfsize_{b}": np.array(1.6) for b in "grz"})
    np.savez(folder / "bad_seeing.npz", **arrays)
    return read_cutouts([fixtures, str(folder / "bad_seeing.npz")])


def _measured(galaxy) -> tuple[float, float]:
    """r-band PSF FWHM and 5-sigma point-source depth, computed here from the raw cutout: 1.4826 x MAD
    of the r pixels 32..50 px from the centre, the nominal 1.30" where the metadata has no psfsize."""
    if "psfsize_r" in galaxy.meta:
        return galaxy.meta["psfsize_r"], galaxy.meta["psfdepth_r"]
    yy, xx = np.indices(galaxy.cutout.shape[:2]) - 50
    r = np.hypot(yy, xx)
    sky = galaxy.cutout[(r >= 32) & (r < 50), 1].astype(np.float64)
    sigma = 1.4826 * np.median(np.abs(sky - np.median(sky)))
    return 1.30, 22.5 - 2.5 * np.log10(5 * sigma * np.sqrt(4 * np.pi) * 1.30 / 0.262 / 2.3548)


def test_each_host_lands_in_the_cell_of_its_own_measured_psf_and_depth(hosts):
    source = RealHostInjections(hosts, "fixtures", "all")
    described = source.describe()
    assert described.n_hosts == 7
    assert described.psf_source == {"default": 6, "metadata": 1}
    assert described.depth_source == {"sky_sigma": 6, "metadata": 1}
    bins = described.bins
    for i, galaxy in enumerate(hosts):
        psf, depth = _measured(galaxy)
        assert source.hosts.psfdepth_r[i] == pytest.approx(depth, abs=1e-6)
        (psf_value, depth_value), = [key for key, members in source.members.items() if i in members]
        for value, measured, edges, axis in ((psf_value, psf, PSF_EDGES, "psf_fwhm_arcsec"),
                                             (depth_value, depth, DEPTH_EDGES, "psfdepth_r_mag")):
            b = next(b for b in bins[axis] if b.value == value)
            assert b.bin == np.digitize(measured, edges)
            assert (b.low is None or b.low <= measured) and (b.high is None or measured < b.high)
    # the fixtures' sky puts them in three depth bins (1, 2, 3 hosts); the 1.6", 24.5 mag copy alone in a fourth
    assert [b.n_hosts for b in bins["psf_fwhm_arcsec"]] == [6, 1]
    assert sorted(b.n_hosts for b in bins["psfdepth_r_mag"]) == [1, 1, 2, 3]
    grid = load_preset("smoke", {"selection_function": GRID}).selection_function
    planned = source.cells(grid)
    assert len(planned) == 2 * 2 * 2 * 4  # theta x mag x occupied PSF bins x occupied depth bins
    for t in GRID["theta_e_arcsec"]:  # every host once in each (theta_E, magnitude) pair of cells
        assert sum(n for c, n in planned if c.theta_e_arcsec == t and c.source_r_mag == 20.5) == 7


def test_the_cells_theta_e_and_magnitude_are_imposed_on_the_arc(hosts):
    source = RealHostInjections(hosts[:6], "fixtures", "all")
    (psf, depth), owner = max(source.members.items(), key=lambda kv: len(kv[1]))
    controls = source.hosts.controls[owner]

    def arc(theta_e, mag):  # the r-band light added to each host (the arc and its Poisson noise)
        return (source.inject(Cell(theta_e, psf, depth, mag), len(owner), (0, 1)) - controls)[:, 1].astype(np.float64)

    bright, faint, wide = arc(1.25, 21.0), arc(1.25, 22.5), arc(2.5, 21.0)
    # the same draws, 1.5 mag fainter: 10^0.6 = 3.98x less light, up to the arcs' Poisson noise
    assert bright.sum(axis=(1, 2)) / faint.sum(axis=(1, 2)) == pytest.approx(10**0.6, rel=0.05)
    # the same draws at twice theta_E (source offsets scale with it): each arc's brightest pixel moves out
    radius = np.hypot(*(np.indices((64, 64)) - 32)).ravel()
    peak = lambda a: radius[a.reshape(len(a), -1).argmax(axis=1)]  # noqa: E731
    assert (peak(wide) > 1.5 * peak(bright)).all(), (peak(wide), peak(bright))


def test_completeness_per_cell_counts_one_injection_per_host_and_flags_thin_cells(ray_local, hosts, scoring_model,
                                                                                 tmp_path):
    cfg = load_preset("smoke", {"selection_function": GRID})
    source = RealHostInjections(hosts[:6], "fixtures", "all six")
    result = selection_function(cfg, scoring_model, source=source)
    planned = source.cells(cfg.selection_function)
    assert result.injections == "RealHostInjections" and result.hosts.source == "real"
    assert len(result.cells) == len(planned) == 2 * 2 * 3 and result.n == 6 * 4
    scorer = ScoringModel.load(scoring_model.path, scoring_model.calibration)
    for i, (cell, n) in enumerate(planned):  # the same injections scored here, outside Ray
        row = next(r for r in result.cells if Cell(*(getattr(r, a) for a in AXES)) == cell)
        p = scorer.predict(source.inject(cell, n, (5, i)))["probability"]
        assert row.n == n and row.detected == int((p >= scoring_model.threshold).sum())
        assert row.measurable == (n >= 3) and row.ci_low <= row.completeness <= row.ci_high
    assert sorted({r.n for r in result.cells}) == [1, 2, 3]
    assert result.cells_measurable == sum(r.n >= 3 for r in result.cells) == 4
    by_theta = {m.value: m for m in result.marginals["theta_e_arcsec"]}
    assert by_theta[0.8].n == 12 and by_theta[0.8].measurable
    by_depth = {m.value: m for m in result.marginals["psfdepth_r_mag"]}
    assert sorted(m.n for m in by_depth.values()) == [4, 8, 12]  # 1, 2, 3 hosts x 4 cells each
    # the hosts without an arc, scored the same way: the model's false positives on these hosts
    fp = result.controls_above_threshold
    assert fp.n == 6 and fp.above_threshold == int((scorer.predict(source.hosts.controls)["probability"] >= 0.5).sum())
    assert fp.measurable and fp.ci_low <= fp.rate <= fp.ci_high
    html, _ = write_report(result, str(tmp_path))
    page = (tmp_path / "selection_function.html").read_text()
    assert "6 real cutouts from fixtures" in page and "not measurable" in page and "value (median)" in page
    assert f"without an arc: {fp.above_threshold} of 6" in page
    assert from_json(SelectionFunction, json.loads((tmp_path / SELECTION_JSON).read_text())) == result


def test_the_asset_injects_into_the_test_splits_real_hosts(ray_local, trained, fixtures, tmp_path):
    halo = HaloSettings(preset="smoke", overrides=[f"lrg_cutouts_path={fixtures}"], root_uri=str(tmp_path / "root"))
    registry = halo.uri("promoted_model")
    version = add_version(registry, trained.model_path, {
        "calibration": Calibration(1.0, 0.0, 0.5, 10).to_dict(), "go_no_go": {"go": True, "failed": []},
        "test_metrics": {"tpr_at_fpr": [{"fpr": 1e-2, "tpr": 0.9, "threshold": 0.5}]}})
    set_production(registry, version, reason="test")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROFILES.name, ["smoke"])
        result = dg.materialize([selection_function_asset], resources={"halo": halo}, instance=instance,
                                partition_key="smoke")
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    # the hosts paired_stamps puts in its test split, never those whose arcs trained the model
    split = inject_dataset(fixtures, tmp_path / "paired", halo.config().injection)
    report = from_json(SelectionFunction, json.loads(
        (tmp_path / "root" / "smoke" / "selection_function" / SELECTION_JSON).read_text()))
    assert metadata["hosts"].value == "real" and metadata["n_hosts"].value == split.galaxies["test"] == 1
    assert report.hosts.bricks == split.bricks["test"] and report.hosts.selected.startswith("1 of 6")
    # 3 theta_E x 2 magnitudes, one host each: every cell below the default 20 is not measurable
    assert metadata["cells"].value == 6 and metadata["cells_measurable"].value == 0
    assert all(c.n == 1 and not c.measurable for c in report.cells)
    assert set(metadata["measured_bins"].value) == {"psf_fwhm_arcsec", "psfdepth_r_mag"}
    assert report.controls_above_threshold.n == 1 and "hosts_without_arc_above_threshold" in metadata
