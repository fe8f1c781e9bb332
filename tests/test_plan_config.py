"""The plan's own config file (the gen5_prime preset above its "halo's additions" block, which is the
plan's dict verbatim): it loads as it is, and each of its keys reaches behaviour or is refused with a
reason. One tiny 6-channel run on three separate split paths (the plan's form) serves every probe."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from halo_core import uris
from halo_core.config import DIAGNOSTICS, PRESETS_DIR, load_config_file, profile_name
from halo_core.data.filtering import build_filtered_dataset
from halo_core.data.samples import load_split_samples
from halo_core.data.shards import open_split, read_manifest
from halo_core.errors import ConfigError
from halo_core.metrics import classification_metrics, precision_at_recall, recall_at_precision
from halo_core.model.checkpoint import load_checkpoint
from halo_core.model.inference import predict_logits
from halo_core.model.network import build_model
from halo_core.training.monitors import expected_lr
from halo_core.training.trainer import fit
from tests.factories import make_paired_table

ADDITIONS = "# ---- halo's additions"
PRESET_TEXT = (PRESETS_DIR / "gen5_prime.yaml").read_text()
PLAN_TEXT = PRESET_TEXT.split(ADDITIONS)[0]
PLAN = yaml.safe_load(PLAN_TEXT)
EXCLUDED = "0460m800"  # one of the plan's exclude_bricks


def test_the_preset_is_the_plan_plus_one_block_of_additions():
    additions = yaml.safe_load("#" + PRESET_TEXT.split(ADDITIONS)[1])
    assert len(PLAN) == 32 and not set(additions) & set(PLAN)
    assert PLAN["optimizer"] == "AdamW" and PLAN["loss"] == "BCEWithLogitsLoss"
    assert PLAN["scheduler"]["type"] == "CosineAnnealingWarmRestarts" and "precision@0.95" in PLAN["metrics"]


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "gen5_prime_config.yaml"
    path.write_text(PLAN_TEXT)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, plan_file):
    """The plan's file with its S3 locations pointed at three local split folders, 5 short epochs."""
    tmp = tmp_path_factory.mktemp("plan_run")
    paths = {}
    for i, (split, bricks) in enumerate({"train": ("1000p010", EXCLUDED), "val": ("2000p010",),
                                         "test": ("3000p010",)}.items()):
        folder = tmp / f"location_{i}"  # no split name in the path: the key alone says which split it is
        folder.mkdir()
        # a split column that disagrees: a location named by val_path/test_path holds that split only
        table = make_paired_table(16, seed=i, bricks=bricks, id_prefix=split, split="train")
        pq.write_table(table, folder / "part.parquet")
        paths[f"{split}_path"] = str(folder)
    overrides = {**paths, "checkpoint_dir": str(tmp / "checkpoints"), "epochs": 5, "batch_size": 8,
                 "device": "cpu"}
    cfg = load_config_file(plan_file, overrides)
    data = str(tmp / "filtered")
    report = build_filtered_dataset(cfg, cfg.split_paths, data)
    out = tmp / "out"
    result = fit(cfg, data, str(out))
    return {"cfg": cfg, "data": data, "report": report, "result": result, "out": out, "tmp": tmp}


def _refused(plan_file, overrides: dict, reason: str) -> bool:
    with pytest.raises(ConfigError, match=reason) as err:
        load_config_file(plan_file, overrides)
    return "\n" not in str(err.value)  # one line


def _splits(r):
    cfg, report = r["cfg"], r["report"]
    assert all(report.splits[s].sources == [str(Path(cfg.split_paths[s]) / "part.parquet")] for s in report.splits)
    assert report.splits["val"].rows_in == 16 and report.splits["test"].rows_in == 16  # column "train" ignored


def _excluded(r):
    assert r["report"].splits["train"].counts["excluded_brick"] > 0
    assert EXCLUDED not in set(open_split(r["data"], "train").meta["brickname"])


def _preprocessing(r):
    spec = read_manifest(r["data"])["preprocess"]
    assert spec["normalization"] == "per_sample_robust" and tuple(spec["clip_range"]) == (-5.0, 20.0)
    shards = open_split(r["data"], "train")
    x = np.asarray(shards.pairs[:], dtype=np.float32)
    assert x.shape[-2:] == (64, 64) and x.min() >= -5 and x.max() <= 20


def _input_keys(r, plan_file):
    keys = r["cfg"].input_keys.npz_keys()
    assert keys == {"stamp_npz": ("image_g", "image_r", "image_z"), "ctrl_stamp_npz": ("image_g", "image_r", "image_z")}
    assert r["report"].splits["val"].rows_kept == 16  # decoded with them
    assert _refused(plan_file, {"input_keys": {"control": ["stamp_npz.image_g"] * 3}}, "ctrl_stamp_npz.<npz key>")


def _model(r, plan_file):
    state, sidecar = load_checkpoint(str(r["out"] / "model.pt"))
    model = build_model(sidecar["model_name"], sidecar["input_channels"])
    model.load_state_dict(state["model"])
    assert model.conv1.in_channels == 6 and model.fc.out_features == 1 and type(model).__name__ == "ResNet"
    assert _refused(plan_file, {"model_name": "vit"}, "model_name")


def _optimisation(r):
    cfg, history = r["cfg"], r["result"].history
    assert len(history) == cfg.epochs == 5
    s = cfg.scheduler
    assert [h.lr for h in history] == pytest.approx(
        [expected_lr(e, cfg.learning_rate, s.T_0, s.T_mult, s.eta_min) for e in range(5)])
    state, _ = load_checkpoint(str(r["out"] / "last.pt"))
    group = state["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == cfg.weight_decay == 1e-4 and group["initial_lr"] == 1e-3
    assert state["scheduler"]["T_0"] == 10 and state["scheduler"]["T_mult"] == 2 and state["scheduler"]["eta_min"] == 1e-6
    # whole batches only (a ragged last batch is dropped)
    assert history[0].samples_seen % cfg.batch_size == 0


def _early_stopping(r):
    state, _ = load_checkpoint(str(r["out"] / "last.pt"))
    val = [h.val_loss for h in r["result"].history]
    best = state["early_stopping"]["best"]  # monitor: val_loss, mode min, improvements above min_delta
    assert best in val and min(val) >= best - r["cfg"].early_stopping.min_delta


def _loss(r):
    """val_loss is BCEWithLogitsLoss (no smoothing, no class weights) of the best model's val logits."""
    res, cfg = r["result"], r["cfg"]
    state, _ = load_checkpoint(res.model_path)
    model = build_model("resnet18", 6)
    model.load_state_dict(state["model"])
    shards, samples = load_split_samples(cfg, r["data"], "val")
    logits = predict_logits(model, shards, samples, 8, torch.device("cpu"), "fp32", channels_last=False)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(samples.labels))
    assert float(bce) == pytest.approx(res.best.val_loss, rel=1e-3)


def _augmentation(r):
    from halo_core.data.loader import BatchStream

    shards, samples = load_split_samples(r["cfg"], r["data"], "train")
    on = BatchStream(shards, samples, 8, seed=0, train=True, augmentation=r["cfg"].augmentation)
    assert {int(e) for i in range(len(on)) for e in on[i][3]} - {0}  # rotations and mirrors drawn
    off = r["cfg"].augmentation.model_copy(update={"random_rotation": False, "random_flip": False,
                                                     "random_transpose": False})
    still = BatchStream(shards, samples, 8, seed=0, train=True, augmentation=off)
    assert {int(e) for i in range(len(still)) for e in still[i][3]} == {0}


def _checkpoints(r):
    names = sorted(p.name for p in r["out"].glob("*.pt"))
    assert names == ["best.pt", "epoch_0005.pt", "last.pt", "model.pt"]  # save_every_n_epochs 5, save_best


def _checkpoint_dir(r):
    from halo_assets.assets import training_dir
    from halo_assets.resources import HaloSettings
    from halo_core.training.trainer import run_key

    halo = HaloSettings(config_path=str(r["tmp"] / "user.yaml"), root_uri=str(r["tmp"] / "root"))
    (r["tmp"] / "user.yaml").write_text(yaml.safe_dump({**PLAN, "checkpoint_dir": r["cfg"].checkpoint_dir}))
    shutil.copytree(r["data"], halo.uri("filtered_dataset"))  # the run key names the data trained on
    # the root under which the keyed run folders go (docs/design.md §9 (run keys)), never the folder itself
    assert training_dir(halo, halo.config(), None) == uris.join(r["cfg"].checkpoint_dir, run_key(halo.config(), r["data"]))


def _wandb(r):
    assert r["cfg"].log_to_wandb
    runs = list((r["out"] / "wandb").glob("offline-run-*"))
    assert runs  # offline: no API key here
    assert r["cfg"].wandb_project == "dark_halo_scope" and r["cfg"].wandb_run_name == "gen5_prime_6ch_v1"


def _metrics(r):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 400), 0, 1)
    m = classification_metrics(labels, scores, prevalence=1e-3, names=r["cfg"].metrics)
    assert set(r["cfg"].metrics) <= set(m)
    assert m["precision@0.95"] == precision_at_recall(labels, scores, 0.95)
    assert m["recall@0.95"] == recall_at_precision(labels, scores, 0.95)


def _diagnostics(r, plan_file):
    assert set(r["cfg"].diagnostic_metrics) == set(DIAGNOSTICS)
    assert _refused(plan_file, {"diagnostic_metrics": ["per_brick_auroc"]}, "none can be dropped")


# each plan key -> the probe that shows it working (r = the run) or refusing what halo cannot build
PROBES = {
    "model_name": _model, "input_channels": _model, "num_classes": _model, "pretrained": _model,
    "train_path": _splits, "val_path": _splits, "test_path": _splits,
    "exclude_bricks": _excluded, "input_keys": _input_keys, "stamp_size": _preprocessing,
    "normalization": _preprocessing, "clip_range": _preprocessing, "augmentation": _augmentation,
    "noise_augmentation": _augmentation, "batch_size": _optimisation, "epochs": _optimisation,
    "learning_rate": _optimisation, "optimizer": _optimisation, "weight_decay": _optimisation,
    "scheduler": _optimisation, "early_stopping": _early_stopping, "loss": _loss, "label_smoothing": _loss,
    "class_weights": _loss, "metrics": _metrics, "diagnostic_metrics": _diagnostics,
    "checkpoint_dir": _checkpoint_dir, "save_every_n_epochs": _checkpoints, "save_best": _checkpoints,
    "log_to_wandb": _wandb, "wandb_project": _wandb, "wandb_run_name": _wandb,
}
# the plan's value works; these values cannot, and say why in one line
REFUSALS = {
    "pretrained": (True, "no pretrained weights can be downloaded"),
    "noise_augmentation": (True, "not built"),
    "num_classes": (2, "BCEWithLogitsLoss trains one logit"),
    "stamp_size": (101, "stamps are 64x64"),
    "optimizer": ("SGD", "optimizer"),
    "loss": ("MSELoss", "loss"),
}


def test_every_plan_key_has_a_probe():
    assert set(PROBES) == set(PLAN)


def test_the_plans_file_loads_as_it_is(plan_file):
    cfg = load_config_file(plan_file)
    dumped = cfg.model_dump(mode="json")
    for key, value in PLAN.items():
        if isinstance(value, dict):  # halo's nested additions (early_stopping.mode) sit beside the plan's
            assert {k: dumped[key][k] for k in value} == value, key
        else:
            assert dumped[key] == value, key
    assert cfg.sample_construction == "paired_6ch" and cfg.split_paths["val"] == PLAN["val_path"]


@pytest.mark.parametrize("probe", sorted(set(PROBES.values()), key=lambda f: f.__name__), ids=lambda f: f.__name__)
def test_plan_key_reaches_behaviour(probe, run, plan_file):
    probe(run, plan_file) if probe.__code__.co_argcount == 2 else probe(run)


@pytest.mark.parametrize("key", sorted(REFUSALS))
def test_what_halo_cannot_build_is_refused_with_the_reason(key, plan_file):
    value, reason = REFUSALS[key]
    assert _refused(plan_file, {key: value}, re.escape(reason))


def test_val_and_test_paths_come_together(plan_file):
    assert _refused(plan_file, {"test_path": ""}, "set both")


def test_profile_is_the_stem_plus_a_content_hash_when_the_stem_is_taken(tmp_path, plan_file):
    assert profile_name(plan_file) == "gen5_prime_config"
    assert profile_name(plan_file, {"gen5_prime_config": str(plan_file)}) == "gen5_prime_config"  # its own
    other = tmp_path / "gen5_prime_config.yaml"
    other.write_text(PLAN_TEXT + "epochs: 3\n")
    taken = profile_name(other, {"gen5_prime_config": str(plan_file)})
    assert re.fullmatch(r"gen5_prime_config-[0-9a-f]{8}", taken)
    preset_named = tmp_path / "demo.yaml"
    preset_named.write_text("epochs: 3\n")
    assert profile_name(preset_named).startswith("demo-")  # never the demo preset's folder
    odd = tmp_path / "my plan (v2).yaml"
    odd.write_text("epochs: 3\n")
    assert "/" not in profile_name(odd) and " " not in profile_name(odd)
