"""Physically grounded simulator of the paired lens-injection dataset (DESIGN §4)."""

from halo_core.simulate.dataset import SimulationReport, simulate_dataset

__all__ = ["SimulationReport", "simulate_dataset"]
