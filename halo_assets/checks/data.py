"""Data-quality checks on paired_stamps and filtered_dataset: blocking, so bad data never reaches training."""

from __future__ import annotations

import dagster as dg
import numpy as np

from halo_assets.assets import filtered_dataset, paired_stamps, source_uri
from halo_assets.metadata import check_result, table
from halo_assets.resources import PROFILES, HaloSettings
from halo_core.data.reader import SPLITS, check_schema, read_parquet_schema, split_files
from halo_core.data.samples import load_split_samples
from halo_core.data.shards import open_split, read_manifest
from halo_core.errors import ContractError

FINITE_CHECK_ROWS = 4096  # per split: a deterministic sample, so the check costs seconds on 1.4 M rows


@dg.asset_check(asset=paired_stamps, blocking=True, partitions_def=PROFILES,
                description="Every parquet file is readable and has the data contract's columns and types.")
def schema_contract(halo: HaloSettings) -> dg.AssetCheckResult:
    """Every parquet file is readable and has the required columns with the contract's types (docs/design.md §3 (data contract))."""
    root = source_uri(halo)
    problems, n_files = [], 0
    for split, files in split_files(root).items():
        if not files:
            problems.append(f"split {split!r}: no files")
        for path in files:
            n_files += 1
            try:
                check_schema(read_parquet_schema(path), path)
            except ContractError as err:  # a truncated file fails the check, it does not crash the step
                problems.append(str(err))
    return check_result(passed=not problems, observed=len(problems), expected="0 problems", n=n_files, metadata={
        "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "_none_"),
    })


@dg.asset_check(asset=filtered_dataset, blocking=True, partitions_def=PROFILES,
                description="No brick and no LRG appears in two splits, so test galaxies were never trained on.")
def split_integrity(halo: HaloSettings) -> dg.AssetCheckResult:
    """No brick and no LRG position in two splits (injections share LRGs, bricks share sky)."""
    integrity = read_manifest(halo.uri("filtered_dataset"))["integrity"]
    shared = sum(len(v) for v in integrity["shared_bricks"].values()) + sum(integrity["shared_lrgs"].values())
    return check_result(passed=integrity["ok"], observed=shared, expected="0 shared bricks or LRGs",
                        n=sum(integrity["bricks_per_split"].values()), metadata={
        "shared_bricks": table([{"splits": k, "n": len(v), "bricks": ", ".join(v[:10])}
                                for k, v in integrity["shared_bricks"].items()]),
        "shared_lrgs": table([{"splits": k, "n": v} for k, v in integrity["shared_lrgs"].items()]),
        "bricks_per_split": dg.MetadataValue.json(integrity["bricks_per_split"]),
    })


@dg.asset_check(asset=filtered_dataset, blocking=True, partitions_def=PROFILES,
                description="None of the configured exclude_bricks survives filtering.")
def excluded_bricks_absent(halo: HaloSettings) -> dg.AssetCheckResult:
    """None of the configured `exclude_bricks` survives filtering."""
    excluded = set(halo.config().exclude_bricks)
    data = halo.uri("filtered_dataset")
    bricks = {s: set(open_split(data, s).meta["brickname"]) for s in SPLITS}
    found = {s: sorted(excluded & b) for s, b in bricks.items()}
    dropped = {s: r["counts"].get("excluded_brick", 0) for s, r in read_manifest(data)["splits"].items()}
    return check_result(passed=not any(found.values()), observed=sum(len(v) for v in found.values()),
                        expected="0 excluded bricks kept", n=sum(len(b) for b in bricks.values()), metadata={
        "excluded_bricks": ", ".join(sorted(excluded)), "found_after_filter": dg.MetadataValue.json(found),
        "rows_dropped": dg.MetadataValue.json(dropped),
    })


@dg.asset_check(asset=filtered_dataset, blocking=True, partitions_def=PROFILES,
                description="Kept pixels are finite, and few rows were quarantined (NaN, corrupt, wrong shape).")
def finite_pixels(halo: HaloSettings) -> dg.AssetCheckResult:
    """Kept pixels are finite, and the quarantined share (NaN, corrupt, bad shape...) is below the limit."""
    cfg = halo.config()
    data = halo.uri("filtered_dataset")
    manifest = read_manifest(data)
    nonfinite, checked = 0, 0
    for split in SPLITS:
        pairs = open_split(data, split).pairs
        rows = np.unique(np.random.default_rng(0).integers(0, len(pairs), min(len(pairs), FINITE_CHECK_ROWS)))
        nonfinite += int((~np.isfinite(pairs[rows])).any(axis=(1, 2, 3, 4)).sum())
        checked += len(rows)
    rows_in = sum(r["rows_in"] for r in manifest["splits"].values())
    quarantined = sum(len(r["quarantined"]) for r in manifest["splits"].values())
    share = quarantined / max(rows_in, 1)
    limit = cfg.go_no_go.max_quarantine_frac
    return check_result(passed=nonfinite == 0 and share <= limit, observed=share,
                        expected=f"quarantined share <= {limit:g}, 0 non-finite kept", n=rows_in, metadata={
        "nonfinite_rows_in_sample": nonfinite, "rows_checked": checked, "quarantined": quarantined,
        "by_reason": dg.MetadataValue.json({s: r["counts"] for s, r in manifest["splits"].items()}),
    })


@dg.asset_check(asset=filtered_dataset, blocking=True, partitions_def=PROFILES,
                description="Every split holds both classes in fair shares: a one-class set learns nothing.")
def class_balance(halo: HaloSettings) -> dg.AssetCheckResult:
    """The configured sample construction yields both classes in every split (a single-class training
    set, like the plan's positives-only batches, cannot learn anything)."""
    cfg = halo.config()
    data = halo.uri("filtered_dataset")
    counts = {s: load_split_samples(cfg, data, s)[1].counts for s in SPLITS}
    minority = {s: min(c.values()) / max(sum(c.values()), 1) for s, c in counts.items()}
    limit = cfg.go_no_go.min_class_share
    return check_result(passed=min(minority.values()) >= limit, observed=min(minority.values()),
                        expected=f"rarer class >= {limit:g} of each split",
                        n=sum(sum(c.values()) for c in counts.values()), metadata={
        "sample_construction": cfg.sample_construction,
        "counts": table([{"split": s, **c, "minority_share": round(minority[s], 3)} for s, c in counts.items()]),
    })


@dg.asset_check(asset=filtered_dataset, blocking=True, partitions_def=PROFILES,
                description="A stamp identical to its control is a masked arc (arc_snr == 0), never a claimed injection.")
def arc_snr_zero_accounted(halo: HaloSettings) -> dg.AssetCheckResult:
    """A stamp identical to its control must be a masked arc (arc_snr == 0), never a claimed injection."""
    splits = read_manifest(halo.uri("filtered_dataset"))["splits"]
    bad = sum(r["identical_pairs_with_arc"] for r in splits.values())
    return check_result(passed=bad == 0, observed=bad, expected="0 identical pairs with an arc",
                        n=sum(r["rows_kept"] for r in splits.values()), metadata={
        "arc_snr_zero_rows_kept": dg.MetadataValue.json({s: r["arc_snr_zero_kept"] for s, r in splits.items()}),
        "identical_pairs_kept": dg.MetadataValue.json({s: r["identical_pairs_kept"] for s, r in splits.items()}),
    })


DATA_CHECKS = [schema_contract, split_integrity, excluded_bricks_absent, finite_pixels, class_balance,
               arc_snr_zero_accounted]
