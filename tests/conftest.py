"""Shared fixtures: one tiny synthetic dataset from the real simulator (smoke preset), built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from halo_core.config import load_preset
from halo_core.data.filtering import build_filtered_dataset
from halo_core.evaluation.calibration import Calibration, calibrate_on_val
from halo_core.evaluation.report import evaluate
from halo_core.model.checkpoint import load_checkpoint, save_checkpoint
from halo_core.simulate import simulate_dataset
from halo_core.simulate.injection import SHIPPED_DIR
from halo_core.survey.candidates import CatalogModel
from halo_core.training.trainer import fit


@pytest.fixture(scope="session")
def smoke_cfg():
    return load_preset("smoke")


@pytest.fixture(scope="session")
def paired_dir(tmp_path_factory, smoke_cfg):
    out = tmp_path_factory.mktemp("paired")
    simulate_dataset(out, smoke_cfg.simulation)
    return str(out)


@pytest.fixture(scope="session")
def filtered_dir(tmp_path_factory, smoke_cfg, paired_dir):
    out = tmp_path_factory.mktemp("filtered") / "filtered_dataset"
    build_filtered_dataset(smoke_cfg, paired_dir, str(out))
    return str(out)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, smoke_cfg, filtered_dir):
    out = tmp_path_factory.mktemp("trained")
    return fit(smoke_cfg, filtered_dir, str(out))


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory, smoke_cfg, filtered_dir, trained):
    """(report folder, EvaluationReport) of the smoke model on its test split: the one real report the
    tests that read a report share (none builds a copy by hand)."""
    out = tmp_path_factory.mktemp("report")
    return out, evaluate(smoke_cfg, filtered_dir, trained.model_path,
                         calibrate_on_val(smoke_cfg, filtered_dir, trained.model_path), str(out))


# The six real DR10 cutouts as halo ships them (byte-identical to ../shared/data/real_dr10_cutouts), so
# every test that reads them runs in any clone; ../shared holds what is not shipped (the LRG catalogue).
REAL_CUTOUTS = SHIPPED_DIR
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def fixtures():
    """The folder of the six real DR10 cutouts."""
    return str(REAL_CUTOUTS)


@pytest.fixture(scope="session")
def scoring_model(trained, tmp_path_factory):
    """The smoke model as a scoring model with its calibration and a stand-in operating threshold of 0.5
    (the smoke test split is too small to measure one)."""
    state, sidecar = load_checkpoint(trained.model_path)
    path = str(tmp_path_factory.mktemp("m") / "model.pt")
    save_checkpoint(path, state, {**sidecar, "calibration": Calibration(1.0, 0.0, 0.5, 10).to_dict(),
                                  "test_metrics": {"tpr_at_fpr": [  # a point as tpr_at_fpr measures one
                                      {"fpr": 1e-2, "n_negatives": 100, "n_distinct_negatives": 100, "tpr": 0.5,
                                       "threshold": 0.5, "measurable": True}]}})
    return CatalogModel.from_checkpoint(path)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session, on the 2 cores CI has (starting Ray costs seconds);
    halo's ray_session uses a running Ray as it is."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
