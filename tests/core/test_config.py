import pytest

from halo_core.config import HaloConfig, load_config, load_preset, parse_overrides, preset_names
from halo_core.errors import ConfigError


def test_gen5_prime_is_the_plan_verbatim():
    cfg = load_preset("gen5_prime")
    assert (cfg.model_name, cfg.input_channels, cfg.batch_size, cfg.epochs) == ("resnet18", 6, 256, 50)
    assert (cfg.optimizer, cfg.learning_rate, cfg.weight_decay) == ("AdamW", 1e-3, 1e-4)
    assert (cfg.scheduler.T_0, cfg.scheduler.T_mult, cfg.scheduler.eta_min) == (10, 2, 1e-6)
    es = cfg.early_stopping
    assert (es.monitor, es.patience, es.min_delta) == ("val_loss", 10, 1e-4)
    assert cfg.clip_range == (-5.0, 20.0) and cfg.normalization == "per_sample_robust"
    assert set(cfg.exclude_bricks) == {"0460m800", "3252p267"}
    assert (cfg.save_every_n_epochs, cfg.save_best) == (5, True)
    assert (cfg.wandb_project, cfg.wandb_run_name) == ("dark_halo_scope", "gen5_prime_6ch_v1")
    assert cfg.needs_control_at_inference


def test_recommended_reads_the_stamp_alone():
    cfg = load_preset("recommended")
    assert cfg.input_channels == 3 and cfg.sample_construction == "unpaired"
    assert not cfg.needs_control_at_inference
    assert cfg.batch_size == 256  # inherited from gen5_prime through `base`


def test_every_shipped_preset_loads():
    assert {"gen5_prime", "recommended", "demo", "smoke"} <= set(preset_names())
    for name in preset_names():
        load_preset(name)


def test_unknown_key_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="bogus_key"):
        load_preset("demo", {"bogus_key": 1})
    with pytest.raises(ConfigError, match="scheduler.T_zero"):
        load_preset("demo", {"scheduler": {"T_zero": 3}})


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="epochs"):
        load_preset("demo", {"epochs": "many"})


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: .*gen5_prime"):
        load_preset("gen6")


def test_six_channels_need_the_paired_construction():
    with pytest.raises(ConfigError, match="input_channels"):
        load_preset("recommended", {"input_channels": 6})


def test_overrides_merge_into_nested_keys():
    cfg = load_preset("demo", parse_overrides(["epochs=3", "scheduler.T_0=4", "clip_range=[-3, 10]"]))
    assert (cfg.epochs, cfg.scheduler.T_0, cfg.scheduler.T_mult, cfg.clip_range) == (3, 4, 1, (-3.0, 10.0))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["epochs"])


def test_config_hash_follows_content():
    assert load_preset("demo").config_hash() == load_preset("demo").config_hash()
    assert load_preset("demo").config_hash() != load_preset("demo", {"epochs": 13}).config_hash()


def test_thresholds_do_not_change_the_training_hash():
    base = load_preset("demo")
    stricter = load_preset("demo", {"go_no_go": {"min_test_auroc": 0.99}, "deployment_prevalence": 1e-4})
    assert stricter.training_hash() == base.training_hash() and stricter.config_hash() != base.config_hash()
    assert load_preset("demo", {"learning_rate": 1e-4}).training_hash() != base.training_hash()


def test_every_config_key_is_classified_once():
    from halo_core.config import DATA_KEYS, NON_WEIGHT_KEYS, WEIGHT_KEYS

    classes = [WEIGHT_KEYS, DATA_KEYS, NON_WEIGHT_KEYS]
    assert sum(map(len, classes)) == len(set().union(*classes)), "a key is in two classes"
    unclassified = set(HaloConfig.model_fields) - set().union(*classes)
    assert not unclassified, f"classify {sorted(unclassified)} in halo_core/config.py (WEIGHT/DATA/NON_WEIGHT_KEYS)"
    assert not set().union(*classes) - set(HaloConfig.model_fields), "a classified key does not exist"


@pytest.mark.parametrize("override", [
    {"wandb_run_name": "other"}, {"log_to_wandb": True}, {"num_workers": 4}, {"device": "cpu"},
    {"calibration": "temperature"}, {"checkpoint_dir": "/elsewhere"}, {"train_path": "s3://b/other"},
    {"challenger": {"min_tolerance": 0.05}}, {"save_every_n_epochs": 1},
])
def test_keys_that_do_not_change_the_weights_keep_the_training_folder(override):
    assert load_preset("demo", override).training_hash() == load_preset("demo").training_hash()


@pytest.mark.parametrize("override", [{"seed": 3}, {"augmentation": {"random_flip": False}}, {"warm_start": True},
                                      {"scheduler": {"T_0": 3}}, {"save_best": False}])
def test_weight_keys_change_the_training_hash(override):
    assert load_preset("demo", override).training_hash() != load_preset("demo").training_hash()


def test_recommended_fixes_what_the_review_flags_in_the_plan():
    from halo_core.training.review import RULES

    def rules(name):
        cfg = load_preset(name)
        return {rule for rule, check in RULES.items() if (f := check(cfg)) and f.severity in ("warn", "error")}

    assert {"lr_annealed_at_last_epoch", "patience_outlasts_restart_cycles", "input_deployable"} <= rules("gen5_prime")
    assert rules("recommended") == set()


@pytest.mark.parametrize("key, value", [
    ("gates.max_auc", 2), ("gates.max_auc", 0.3), ("go_no_go.min_test_auroc", -3), ("go_no_go.min_test_auroc", 1),
    ("go_no_go.max_quarantine_frac", 7), ("go_no_go.max_quarantine_frac", 0), ("go_no_go.max_ece_after_calibration", 1),
    ("go_no_go.min_precision_at_recall_0_90", 0), ("go_no_go.max_arc_snr_zero_accuracy_as_lens", 1.01),
    ("go_no_go.max_brick_auroc_std", 1), ("go_no_go.max_train_val_gap", 1000), ("go_no_go.min_arc_occlusion_drop", -1),
    ("go_no_go.max_core_to_arc_occlusion_drop", 100), ("quality_cuts.max_bad_pixel_frac", 1.5),
    ("deployment_prevalence", 5), ("deployment_prevalence", 0), ("annulus_min_radius_px", 40),
    ("simulation.n_lrg.val", 0), ("seed", -1), ("class_weights", [1, -2]),
])
def test_a_threshold_out_of_its_bounds_is_a_one_line_error_naming_the_key(key, value):
    """Out-of-range limits would switch a gate off (or make it impossible) without a word."""
    *parents, leaf = key.split(".")
    overrides = node = {}
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    if key == "simulation.n_lrg.val":
        overrides["simulation"]["n_lrg"] = {"train": 10, "val": 0, "test": 10}
    with pytest.raises(ConfigError) as err:
        load_preset("smoke", overrides)
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["../../somewhere/evil", "/etc/passwd", "smoke/../demo", "presets/smoke", ""])
def test_a_preset_is_a_package_name_never_a_path(tmp_path, name):
    with pytest.raises(ConfigError, match="a preset is a name, not a path"):
        load_preset(name)


@pytest.mark.parametrize("preset", ["recommended", "smoke"])
def test_a_nested_set_keeps_the_sibling_keys_at_every_depth(preset):
    """`--set simulation.n_lrg.train=3600` once replaced the whole n_lrg dict (val and test were dropped)."""
    before = load_preset(preset).simulation
    cfg = load_preset(preset, parse_overrides(["simulation.n_lrg.train=3600"]))
    assert cfg.simulation.n_lrg == {**before.n_lrg, "train": 3600}
    assert cfg.simulation.model_dump(exclude={"n_lrg"}) == before.model_dump(exclude={"n_lrg"})


def test_a_dict_valued_key_missing_a_split_is_a_one_line_error_naming_it(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("simulation: {n_lrg: {train: 30, test: 5}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(config_path=str(path))
    assert "simulation.n_lrg" in str(err.value) and "missing val" in str(err.value)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("content, says", [
    (b"epochs: 3\nwandb_run_name: caf\xe9\n", "not UTF-8"),
    (b"epochs: 3\nseed: 1\nepochs: 4\n", "duplicate key 'epochs' at line 3"),
    (b"scheduler: {T_0: 3, T_0: 4}\n", "duplicate key 'T_0'"),
    (b"epochs: [3\n", "not valid YAML at line 2"),
])
def test_an_unreadable_config_file_is_a_one_line_error_naming_the_file(tmp_path, content, says):
    path = tmp_path / "plan.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(config_path=str(path))
    assert str(err.value).startswith(f"{path}: ") and says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("assignments, says", [
    (["epochs=[1,"], "--set 'epochs=[1,': not valid YAML"),
    (["simulation={seed: 1, seed: 2}"], "duplicate key 'seed'"),
    (["simulation=3", "simulation.seed=1"], "simulation was set to a value"),
])
def test_a_bad_set_is_a_one_line_error_naming_it(assignments, says):
    with pytest.raises(ConfigError) as err:
        parse_overrides(assignments)
    assert says in str(err.value) and "\n" not in str(err.value)
