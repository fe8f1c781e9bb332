import logging
import os

import numpy as np
import pytest
import torch

from halo_core.config import load_preset
from halo_core.data.filtering import build_filtered_dataset
from halo_core.errors import CheckpointError, ContractError
from halo_core.model.checkpoint import load_checkpoint, load_model
from halo_core.training.trainer import FINAL, LAST, fit
from tests.factories import make_paired_table, write_split_dirs


def test_fit_writes_a_model_with_its_provenance(trained, smoke_cfg):
    model, sidecar = load_model(trained.model_path)
    assert sidecar["input_channels"] == 3 and sidecar["config_hash"] == smoke_cfg.config_hash()
    assert sidecar["preprocess"]["normalization"] == smoke_cfg.normalization
    assert sidecar["preprocess"]["clip_range"] == list(smoke_cfg.clip_range)
    assert len(trained.history) == smoke_cfg.epochs == len(sidecar["history"])
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 1)
    for key in ("train_loss", "val_loss", "val_auroc", "lr", "grad_norm_max", "samples_per_s"):
        assert np.isfinite(getattr(trained.history[-1], key)), key
    assert trained.history[0].lr == smoke_cfg.learning_rate


def test_checkpoints_load_without_pickle(trained):
    state, _ = load_checkpoint(trained.model_path)
    assert set(state) == {"model", "epoch"}


def test_finished_run_is_reused_instead_of_retrained(trained, smoke_cfg, filtered_dir):
    out = str(trained.model_path).rsplit("/", 1)[0]
    mtime = os.stat(trained.model_path).st_mtime_ns
    again = fit(smoke_cfg, filtered_dir, out)
    assert again.reused and not trained.reused and again.history == trained.history
    assert os.stat(again.model_path).st_mtime_ns == mtime  # not rewritten


def test_longer_run_continues_from_last_checkpoint(tmp_path, smoke_cfg, filtered_dir):
    one = load_preset("smoke", {"epochs": 1})
    fit(one, filtered_dir, str(tmp_path))
    with pytest.raises(CheckpointError, match="written with training_hash"):
        fit(smoke_cfg, filtered_dir, str(tmp_path))  # a different config never silently continues


def test_truncated_last_checkpoint_is_skipped_with_a_warning(tmp_path, smoke_cfg, filtered_dir, caplog):
    fit(smoke_cfg, filtered_dir, str(tmp_path))
    (tmp_path / FINAL).unlink()  # killed while writing last.pt: the run never finished
    last = tmp_path / LAST
    last.write_bytes(last.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="halo_core.training.trainer"):
        result = fit(smoke_cfg, filtered_dir, str(tmp_path))
    assert "ignoring unusable" in caplog.text and result.resumed_from_epoch is None
    assert load_checkpoint(str(last))[0]["epoch"] == smoke_cfg.epochs - 1  # rewritten whole


def test_training_refuses_a_leaking_dataset(tmp_path, smoke_cfg):
    root = write_split_dirs(tmp_path / "raw", {
        "train": make_paired_table(8, bricks=("1000p010",)),
        "val": make_paired_table(8, seed=1, bricks=("1000p010",), id_prefix="b"),
        "test": make_paired_table(8, seed=2, bricks=("3000p010",), id_prefix="c"),
    })
    build_filtered_dataset(smoke_cfg, str(root), str(tmp_path / "f"))
    with pytest.raises(ContractError, match="share bricks or LRGs"):
        fit(smoke_cfg, str(tmp_path / "f"), str(tmp_path / "run"))


def test_training_refuses_data_preprocessed_differently(tmp_path, filtered_dir):
    other = load_preset("smoke", {"normalization": "per_sample_robust"})
    with pytest.raises(CheckpointError, match="preprocessing differs"):
        fit(other, filtered_dir, str(tmp_path))


def test_wandb_logs_offline_without_an_api_key(tmp_path, filtered_dir, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = load_preset("smoke", {"epochs": 1, "log_to_wandb": True, "wandb_run_name": "offline_test"})
    fit(cfg, filtered_dir, str(tmp_path))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history = list(runs[0].glob("run-*.wandb"))
    assert history and b"val_auroc" in history[0].read_bytes()


def test_warm_start_begins_from_the_given_weights_and_keys_its_run(tmp_path, trained, filtered_dir):
    from halo_core.model.checkpoint import file_sha256
    from halo_core.training.trainer import run_key

    cfg = load_preset("smoke", {"warm_start": True, "epochs": 1, "learning_rate": 1e-9})
    result = fit(cfg, filtered_dir, str(tmp_path), warm_start_from=trained.model_path)
    start, _ = load_checkpoint(trained.model_path)
    state, sidecar = load_checkpoint(result.model_path)
    assert sidecar["warm_start_from"] == file_sha256(trained.model_path)
    conv = "conv1.weight"  # lr 1e-9 for one epoch: still the starting weights, not a random init
    assert torch.allclose(state["model"][conv], start["model"][conv], atol=1e-6)
    key = run_key(cfg, filtered_dir, trained.model_path)
    assert key.startswith(run_key(cfg, filtered_dir) + "-from-") and key.endswith(sidecar["warm_start_from"][:8])
