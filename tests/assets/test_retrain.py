"""A retrain on new data really trains (docs/design.md §9 (run keys), issue 12): the run folder is keyed by the training
hash and the data fingerprint, so the same data reuses the finished run and new data trains anew."""

import json
from pathlib import Path

import dagster as dg
import torch

from halo_assets.demo import run_retrain
from tests.factories import make_paired_table, write_split_dirs

TRAINING = ["paired_stamps", "filtered_dataset", "trained_model"]


def _simulate(raw, seed: int):
    """Rewrites the dataset in place, as a new data drop under the same train_path would."""
    write_split_dirs(raw, {split: make_paired_table(12, seed=seed + i, bricks=(f"{i + 1}000p010",), id_prefix="abc"[i])
                           for i, split in enumerate(("train", "val", "test"))})


def _trained(result) -> dict:
    event = next(m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == "trained_model")
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_new_data_under_the_same_path_trains_a_new_model(tmp_path):
    raw, root = tmp_path / "raw", str(tmp_path / "root")
    overrides = [f"train_path={raw}", "sample_construction=ctrl_negative"]
    with dg.instance_for_test() as instance:
        _simulate(raw, seed=0)
        first = _trained(run_retrain("smoke", overrides, root, instance, assets=TRAINING))
        same = _trained(run_retrain("smoke", overrides, root, instance, assets=TRAINING))
        _simulate(raw, seed=10)
        new = _trained(run_retrain("smoke", overrides, root, instance, assets=TRAINING))
    assert not first["reused"] and same["reused"] and same["model_path"] == first["model_path"]
    assert not new["reused"] and new["epochs_run"] == 2 and new["model_path"] != first["model_path"]
    assert new["data_fingerprint"] != first["data_fingerprint"] and new["training_hash"] == first["training_hash"]
    manifest = json.loads((tmp_path / "root" / "smoke" / "filtered_dataset" / "manifest.json").read_text())
    sidecar = json.loads(Path(new["model_path"]).with_suffix(".json").read_text())
    assert sidecar["data_fingerprint"] == manifest["data_fingerprint"] == new["data_fingerprint"]
    a, b = _weights(first["model_path"]), _weights(new["model_path"])
    assert any(not torch.equal(a[k], b[k]) for k in a)
