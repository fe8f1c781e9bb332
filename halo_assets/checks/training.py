"""Checks on the trained model's run (the plan's training monitors) and the configuration review, all WARN:
they advise, the go/no-go criteria decide."""

from __future__ import annotations

import re

import dagster as dg

from halo_assets.assets import filtered_dataset, model_path, trained_model
from halo_assets.metadata import check_result, table
from halo_assets.resources import PROFILES, HaloSettings
from halo_core.data.samples import load_split_samples
from halo_core.model.checkpoint import load_sidecar
from halo_core.training.monitors import monitor_report, promoted_record, run_history
from halo_core.training.review import INFO, RULES, Finding, measure_step_seconds, training_budget


def _training_monitor(name: str, description: str, comparison: str):
    """An advisory (WARN) check on the trained model from its per-epoch history."""

    @dg.asset_check(asset=trained_model, name=name, description=description, partitions_def=PROFILES)
    def check(halo: HaloSettings) -> dg.AssetCheckResult:
        sidecar = load_sidecar(model_path(halo))
        history = run_history(sidecar)
        result = monitor_report(sidecar)[name]  # against the run's own stored config
        return check_result(passed=result["passed"], observed=result["value"], expected=f"{comparison} {result['limit']:g}",
                            severity=dg.AssetCheckSeverity.WARN, metadata={
                                "epochs": len(history), **{k: v for k, v in result.items()
                                                           if k not in ("passed", "value", "limit")}})

    return check


@dg.asset_check(asset=trained_model, partitions_def=PROFILES,
                description="WARN: neither class is 100 % right on val (a perfect class means a shortcut).")
def per_class_accuracy_below_one(halo: HaloSettings) -> dg.AssetCheckResult:
    """Neither class is classified 100 % right on val: a perfect class means the model found something
    easier than arcs (the plan's reviewer question Q8). Read from the promoted epoch's training record,
    which scored val with exactly these weights."""
    sidecar = load_sidecar(model_path(halo))
    result = promoted_record(run_history(sidecar), sidecar["best_epoch"]).val_per_class_accuracy
    classes = [result[c] for c in ("non_lens", "lens")]
    best = max((c["accuracy"] for c in classes if c["accuracy"] is not None), default=None)
    return check_result(passed=result["passed"], observed=best, expected="each class's val accuracy < 1 (at p 0.5)",
                        n=sum(c["n"] for c in classes), severity=dg.AssetCheckSeverity.WARN, metadata={
        "per_class": table([{"class": c, **result[c]} for c in ("non_lens", "lens")])})


TRAINING_CHECKS = [
    _training_monitor("lr_followed_schedule", "WARN: each epoch's LR equals CosineAnnealingWarmRestarts' closed form.",
                      "relative error <="),
    _training_monitor("grad_norm", "WARN: the run's largest gradient norm stays below go_no_go.max_grad_norm.", "<"),
    per_class_accuracy_below_one,
]


def _finding_result(finding: Finding | None, keys: dict, extra: dict | None = None) -> dg.AssetCheckResult:
    """WARN, never blocking: a config finding must not stop gen5_prime from training, so the report can
    show what its choices cost. The 6-channel finding's ERROR (no promotion) is enforced where the
    model is, by evaluation_report.deployable_without_control on the trained model's sidecar; here it
    only warns before the GPU hours are spent, so it is not a second promotion gate."""
    metadata = {"config_keys": dg.MetadataValue.json(keys), **(extra or {})}
    if finding is None:
        return check_result(passed=True, observed="no finding", expected="no warning", metadata=metadata)
    return check_result(
        passed=finding.severity == INFO, observed=f"{finding.severity} finding",
        expected="no warning", severity=dg.AssetCheckSeverity.WARN, metadata={
            **metadata, "finding_severity": finding.severity, "message": finding.message,
            "consequence": finding.consequence, "fix": finding.fix})


def _config_values(cfg, keys) -> dict:
    values = cfg.model_dump(mode="json")
    out = {}
    for key in keys:
        node = values
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def _first_line(doc: str) -> str:
    """A docstring's first sentence on one line: the UI's one-line description."""
    return re.split(r"[.;] ", " ".join(doc.split()))[0].rstrip(".") + "."


def _config_review_check(rule: str):
    """One configuration-review rule as a check beside the dataset it will train on: it runs before
    trained_model, and nothing waits for it."""

    @dg.asset_check(asset=filtered_dataset, name=f"config_{rule}", description=f"WARN: {_first_line(RULES[rule].__doc__)}",
                    partitions_def=PROFILES)
    def check(halo: HaloSettings) -> dg.AssetCheckResult:
        cfg = halo.config()
        finding = RULES[rule](cfg)
        return _finding_result(finding, _config_values(cfg, finding.keys) if finding else {})

    return check


@dg.asset_check(asset=filtered_dataset, partitions_def=PROFILES,
                description="WARN: the configured epochs x train samples take at most a day at the measured rate.")
def config_training_budget(halo: HaloSettings) -> dg.AssetCheckResult:
    """epochs x train samples as sample iterations and the wall time they take at the rate measured
    by a few forward/backward steps of the configured model on this device; warns above a day."""
    cfg = halo.config()
    _, samples = load_split_samples(cfg, halo.uri("filtered_dataset"), "train")
    timing = measure_step_seconds(cfg)
    finding = training_budget(cfg, len(samples), timing)
    return _finding_result(finding, _config_values(cfg, finding.keys), {
        "train_samples": len(samples), "samples_per_s": 1 / timing["seconds_per_sample"], "device": timing["device"],
    })


CONFIG_REVIEW_CHECKS = [*(_config_review_check(rule) for rule in RULES), config_training_budget]
