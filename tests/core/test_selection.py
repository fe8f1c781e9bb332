import json

import numpy as np
import pytest

from halo_core.config import load_preset
from halo_core.errors import CheckpointError
from halo_core.records import from_json
from halo_core.reports.figures import MAX_PLOT_WIDTH_PX
from halo_core.survey.candidates import CatalogModel
from halo_core.survey.scoring import ScoringModel
from halo_core.survey.selection import (
    AXES,
    SELECTION_JSON,
    Cell,
    SelectionFunction,
    SimulatedHosts,
    SimulatedInjections,
    cells,
    selection_function,
    write_report,
)
from tests.factories import png_size

GRID = {"selection_function": {"theta_e_arcsec": [0.8, 2.0], "psf_fwhm_arcsec": [1.2], "psfdepth_r_mag": [24.6],
                               "source_r_mag": [20.5, 23.5], "injections_per_cell": 6, "seed": 3}}


def test_simulated_injections_impose_the_cells_parameters():
    source = SimulatedInjections()
    faint, bright = (source.inject(Cell(1.5, 1.2, 24.6, m), 8, (0, 1)) for m in (23.5, 20.5))
    deep, shallow = (source.inject(Cell(1.5, 1.2, d, 22.0), 8, (0, 2)) for d in (25.5, 23.5))
    assert faint.shape == (8, 3, 64, 64) and np.isfinite(faint).all()
    # same seed, same hosts and noise draws: only the arc differs, 3 mag brighter
    assert ((bright - faint)[:, 1].sum(axis=(1, 2)) > 0).all()
    corner_noise = lambda s: np.std(np.diff(s[:, 1, :10, :10], axis=-1))  # sky-dominated corner
    assert corner_noise(shallow) > 4 * corner_noise(deep)  # 2 mag shallower: 6.3x the sky sigma


def test_grid_completeness_is_the_models_verdict_per_cell(ray_local, scoring_model, tmp_path):
    cfg = load_preset("smoke", GRID)
    result = selection_function(cfg, scoring_model)
    assert len(result.cells) == 4 and result.n == 24 and result.injections == "SimulatedInjections"
    assert result.hosts == SimulatedHosts() and result.controls_above_threshold is None
    scorer = ScoringModel.load(scoring_model.path, scoring_model.calibration)
    for i, cell in enumerate(cells(cfg)):  # the same injections scored here, outside Ray
        p = scorer.predict(SimulatedInjections().inject(cell, 6, (3, i)))["probability"]
        row = next(r for r in result.cells if Cell(*(getattr(r, a) for a in AXES)) == cell)
        assert row.detected == int((p >= scoring_model.threshold).sum())
        assert row.ci_low <= row.completeness <= row.ci_high and row.ci_high - row.ci_low > 0.2
    by_mag = {m.value: m for m in result.marginals["source_r_mag"]}
    assert by_mag[20.5].n == 12
    assert by_mag[20.5].detected == sum(r.detected for r in result.cells if r.source_r_mag == 20.5)
    html, plots = write_report(result, str(tmp_path))
    assert from_json(SelectionFunction, json.loads((tmp_path / SELECTION_JSON).read_text())) == result
    assert set(plots) == {*(f"completeness_{a}" for a in AXES), "heatmap"}
    assert all(png_size(p)[0] <= MAX_PLOT_WIDTH_PX for p in plots.values())  # one figure each, none too wide
    assert (tmp_path / "selection_function.html").read_text().count("data:image/png") == len(plots)


def test_needs_a_measured_operating_threshold(scoring_model):
    blind = CatalogModel(**{**scoring_model.__dict__, "threshold": None})
    with pytest.raises(CheckpointError, match="no measured threshold"):
        selection_function(load_preset("smoke", GRID), blind)
