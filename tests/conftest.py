"""Shared fixtures: one tiny synthetic dataset from the real simulator (smoke preset), built once."""

from __future__ import annotations

import pytest

from halo_core.config import load_preset
from halo_core.filtering import build_filtered_dataset
from halo_core.simulate import simulate_dataset
from halo_core.train import fit


@pytest.fixture(scope="session")
def smoke_cfg():
    return load_preset("smoke")


@pytest.fixture(scope="session")
def paired_dir(tmp_path_factory, smoke_cfg):
    out = tmp_path_factory.mktemp("paired")
    sim = smoke_cfg.simulation
    simulate_dataset(out, n_lrg=sim.n_lrg, injections_per_lrg=sim.injections_per_lrg,
                     lrgs_per_brick=sim.lrgs_per_brick, seed=sim.seed)
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
