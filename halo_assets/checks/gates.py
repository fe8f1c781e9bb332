"""Shortcut-gate checks on the dataset: the selection null blocks, the probes are evidence (WARN), docs/design.md §8 (trust)."""

from __future__ import annotations

import dagster as dg

from halo_assets.assets import GATES_FILE, shortcut_gates
from halo_assets.metadata import check_result, number, table
from halo_assets.resources import PROFILES, HaloSettings
from halo_core import uris
from halo_core.evaluation.gates import GATES
from halo_core.evaluation.promotion import gate_criteria


def _gates_file(halo: HaloSettings) -> dict:
    return uris.read_json(uris.join(halo.uri("shortcut_gates"), GATES_FILE))


def _gate_check(gate: str):
    """A data-level probe: evidence with its CI and n (docs/design.md §8 (trust)), so a WARN, never blocking."""

    @dg.asset_check(asset=shortcut_gates, name=f"shortcut_{gate}_auc",
                    description=f"The {gate} probe's cross-validated AUC with its bootstrap 95 % interval; "
                                f"WARN above `gates.max_auc` (evidence: arc light in the core is signal).",
                    partitions_def=PROFILES)
    def check(halo: HaloSettings) -> dg.AssetCheckResult:
        result = _gates_file(halo)["gates"][gate]
        return check_result(passed=result["passed"], severity=dg.AssetCheckSeverity.WARN, metadata={
            "auc": number(result["auc"]), "ci95": dg.MetadataValue.json(result["ci95"]),
            "threshold": result["threshold"], "n": result["n"], "strata": table(result["strata"]),
        })

    return check


@dg.asset_check(asset=shortcut_gates, blocking=True, partitions_def=PROFILES)
def selection_null(halo: HaloSettings) -> dg.AssetCheckResult:
    """The probes on arc-free inputs (the positives' own controls against the negatives) stay at or
    below `gates.max_null_auc`: the galaxies chosen as lenses are not separable without their arcs.
    Paired constructions pass as not informative (both sides are the same images)."""
    gates = _gates_file(halo)
    null, probes = gates["selection_null"], gates["selection_null"]["probes"]
    return check_result(passed=gate_criteria(gates)["selection_null"].passed, metadata={
        "informative": null["informative"], "reason": null["reason"] or "-", "max_auc": number(null["max_auc"]),
        "threshold": null["threshold"],
        "probes": table([{"probe": k, "auc": v["auc"], "ci95": v["ci95"], "n": v["n"]} for k, v in probes.items()]),
    })


GATE_CHECKS = [*(_gate_check(g) for g in GATES), selection_null]
