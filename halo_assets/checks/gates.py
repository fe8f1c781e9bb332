"""Shortcut-gate checks on the dataset: the selection null blocks, the probes are evidence (WARN), docs/design.md §8 (trust)."""

from __future__ import annotations

import dagster as dg

from halo_assets.assets import GATES_FILE, shortcut_gates
from halo_assets.metadata import check_result, criterion_result, table
from halo_assets.resources import PROFILES, HaloSettings
from halo_core import uris
from halo_core.evaluation.gates import GATES
from halo_core.evaluation.promotion import gate_criteria
from halo_core.evaluation.results import GatesReport


def _gates_file(halo: HaloSettings) -> GatesReport:
    return GatesReport.read(uris.join(halo.uri("shortcut_gates"), GATES_FILE))


def _gate_check(gate: str):
    """A data-level probe: evidence with its CI and n (docs/design.md §8 (trust)), so a WARN, never blocking."""

    @dg.asset_check(asset=shortcut_gates, name=f"shortcut_{gate}_auc",
                    description=f"WARN, evidence: a linear probe on the {gate} features alone barely tells lenses "
                                "from non-lenses.", partitions_def=PROFILES)
    def check(halo: HaloSettings) -> dg.AssetCheckResult:
        result = _gates_file(halo).probes[gate]
        return check_result(passed=result.passed, observed=result.auc, expected=f"AUC <= {result.threshold:g}",
                            n=result.n, severity=dg.AssetCheckSeverity.WARN, metadata={
                                "ci95": dg.MetadataValue.json(list(result.ci95)), "strata": table(result.strata)})

    return check


@dg.asset_check(asset=shortcut_gates, blocking=True, partitions_def=PROFILES,
                description="Without their arcs, the galaxies chosen as lenses look like the non-lenses.")
def selection_null(halo: HaloSettings) -> dg.AssetCheckResult:
    """The probes on arc-free inputs (the positives' own controls against the negatives) stay at or
    below `gates.max_null_auc`: the galaxies chosen as lenses are not separable without their arcs.
    Paired constructions pass as not informative (both sides are the same images)."""
    gates = _gates_file(halo)
    null = gates.selection_null
    return criterion_result(gate_criteria(gates)["selection_null"], {
        "informative": null.informative, "reason": null.reason or "-",
        "probes": table([{"probe": k, "auc": v.auc, "ci95": list(v.ci95), "n": v.n} for k, v in null.probes.items()]),
    })


GATE_CHECKS = [*(_gate_check(g) for g in GATES), selection_null]
