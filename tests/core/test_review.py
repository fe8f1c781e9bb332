import pytest

from halo_core.config import load_preset
from halo_core.training.monitors import expected_lr
from halo_core.training.review import (
    ERROR,
    INFO,
    RULES,
    WARN,
    cycle_starts,
    measure_step_seconds,
    review_config,
    training_budget,
)

GEN5 = load_preset("gen5_prime")
# (rule, overrides that fix it); the metric-name rule is fed the plan's own wording 'precision@0.95'
CASES = [
    ("lr_annealed_at_last_epoch", {}, {"scheduler": {"T_mult": 1}}),  # 50 epochs = 5 cycles of 10
    ("patience_outlasts_restart_cycles", {}, {"scheduler": {"T_mult": 1}, "early_stopping": {"patience": 11}}),
    ("metrics_named_unambiguously", {"metrics": ["auroc", "precision@0.95"]}, {"metrics": ["auroc", "auprc"]}),
    ("targets_measured_by_metrics", {}, {"metrics": ["auroc", "precision@0.90"]}),
    ("input_deployable", {}, {"input_channels": 3, "sample_construction": "unpaired"}),
]


@pytest.mark.parametrize("rule, plan, fixed", CASES, ids=[c[0] for c in CASES])
def test_each_rule_fires_on_gen5_prime_and_not_on_a_config_that_fixes_it(rule, plan, fixed):
    finding = RULES[rule](load_preset("gen5_prime", plan))
    assert finding is not None and finding.rule == rule and finding.keys and finding.fix
    assert RULES[rule](load_preset("gen5_prime", {**plan, **fixed})) is None


def test_restarts_fall_at_10_30_70_and_a_50_epoch_run_ends_near_half_the_peak():
    assert cycle_starts(10, 2, 71) == [0, 10, 30, 70]
    finding = RULES["lr_annealed_at_last_epoch"](GEN5)
    last = expected_lr(49, 1e-3, 10, 2, 1e-6)
    assert 0.5e-3 < last < 0.6e-3 and f"lr {last:.3g}" in finding.message
    assert "30 or 70" in finding.fix


def test_a_cycle_too_short_to_anneal_asks_for_a_longer_t0():
    finding = RULES["lr_annealed_at_last_epoch"](load_preset("smoke"))  # T_0=2: ends at half the peak
    assert "T_0 to at least 7" in finding.fix


def test_patience_finding_names_the_epochs_at_risk():
    finding = RULES["patience_outlasts_restart_cycles"](GEN5)
    assert "epoch 20 or 40" in finding.consequence and "above 40" in finding.fix
    equal = load_preset("gen5_prime", {"scheduler": {"T_mult": 1}, "early_stopping": {"patience": 10}})
    assert RULES["patience_outlasts_restart_cycles"](equal) is not None  # equal to the period is at risk


def test_the_plans_metric_names_are_read_one_way_and_said_so():
    finding = RULES["metrics_named_unambiguously"](GEN5)
    assert finding.severity == INFO
    assert "'precision@0.95' = precision at recall 0.95" in finding.message
    assert "'recall@0.95' = recall at precision 0.95" in finding.message


def test_six_channels_is_an_error_only_for_gen5_prime():
    severities = {f.rule: f.severity for f in review_config(GEN5)}
    assert severities["input_deployable"] == ERROR
    assert "input_deployable" not in {f.rule for f in review_config(load_preset("recommended"))}


def test_training_budget_counts_iterations_and_warns_above_a_day():
    cfg = load_preset("gen5_prime")
    small = training_budget(cfg, 1000, {"seconds_per_sample": 1e-3, "device": "cpu", "batch_measured": 16, "steps": 2})
    assert small.severity == INFO and "50,000 sample iterations in 200 steps" in small.message
    assert "~0.01 h" in small.consequence
    big = training_budget(cfg, 1_400_000, {"seconds_per_sample": 2e-3, "device": "cpu", "batch_measured": 16,
                                           "steps": 2})
    assert big.severity == WARN and "~38.89 h" in big.consequence
    assert training_budget(load_preset("gen5_prime", {"train_path": "s3://b/p"}), None, None).keys[-1] == "train_path"


def test_warm_up_measures_a_rate_on_this_device():
    timing = measure_step_seconds(load_preset("smoke"), steps=1)
    assert timing["device"] == "cpu" and timing["batch_measured"] == 16 and 0 < timing["seconds_per_sample"] < 1
