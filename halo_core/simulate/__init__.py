"""Physically grounded simulator of the paired lens-injection dataset (docs/design.md §4 (simulator))."""

from halo_core.simulate.dataset import SIMULATION_FILE, SimulationReport, build_simulated_dataset, simulate_dataset

__all__ = ["SIMULATION_FILE", "SimulationReport", "build_simulated_dataset", "simulate_dataset"]
