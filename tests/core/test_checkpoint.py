"""Verified models: the sidecar records the weights' sha256 and every load compares it (H3: a model file
with altered bytes once scored rows `scored` with empty scores, exit 0)."""

import hashlib
import json
import logging
import shutil

import pytest

from halo_core.cli import main
from halo_core.errors import CheckpointError
from halo_core.model.checkpoint import WEIGHTS_SHA256, load_checkpoint, load_model, sidecar_path


@pytest.fixture
def copy(trained, tmp_path):
    path = tmp_path / "model.pt"
    shutil.copy(trained.model_path, path)
    shutil.copy(sidecar_path(trained.model_path), sidecar_path(str(path)))
    return path


def test_the_sidecar_records_the_sha256_of_the_weights_beside_it(trained):
    sidecar = json.loads(open(sidecar_path(trained.model_path)).read())
    assert sidecar[WEIGHTS_SHA256] == hashlib.sha256(open(trained.model_path, "rb").read()).hexdigest()


def test_altered_weights_are_refused_everywhere_with_one_line(copy, tmp_path, capsys, fixtures):
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensors: torch would still load it
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as err:
        load_model(str(copy))
    assert "sha256" in str(err.value) and "\n" not in str(err.value) and str(copy) in str(err.value)
    npz = sorted(p for p in __import__("pathlib").Path(fixtures).glob("*.npz"))[0]
    assert main(["score", "--model", str(copy), str(npz), "--out", str(tmp_path / "s.csv")]) == 2
    out = capsys.readouterr()
    assert "sha256" in out.err and out.err.count("\n") == 1 and not (tmp_path / "s.csv").exists()


def test_a_model_without_a_recorded_sha256_loads_with_a_one_line_warning(copy, caplog):
    sidecar = json.loads(open(sidecar_path(str(copy))).read())
    del sidecar[WEIGHTS_SHA256]
    open(sidecar_path(str(copy)), "w").write(json.dumps(sidecar))
    with caplog.at_level(logging.WARNING):
        state, _ = load_checkpoint(str(copy))
    assert "model" in state
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "records no sha256" in warnings[0] and "\n" not in warnings[0]


def test_a_non_finite_score_is_a_refusal_never_a_scored_row(trained, tmp_path, fixtures):
    import torch

    from halo_core.model.checkpoint import save_checkpoint
    from halo_core.survey.scoring import score

    state, sidecar = load_checkpoint(trained.model_path)
    broken = {k: (torch.full_like(v, float("nan")) if k.startswith("fc.") else v) for k, v in state["model"].items()}
    save_checkpoint(str(tmp_path / "nan.pt"), {**state, "model": broken}, sidecar)  # a sha256 that matches
    table = score(str(tmp_path / "nan.pt"), [str(p) for p in sorted(__import__("pathlib").Path(fixtures).glob("*.npz"))])
    assert (table["status"] == "refused: nonfinite_score").all() and table["score"].isna().all()
