from pathlib import Path

import pandas as pd
import pytest

from halo_core.calibration import Calibration
from halo_core.checkpoint import load_checkpoint, save_checkpoint
from halo_core.cli import main
from halo_core.errors import CheckpointError
from halo_core.model import build_model
from halo_core.scoring import score

REAL_CUTOUTS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real_dr10_cutouts"
GALAXIES = ["0001m040_4091", "0001m060_2396", "0001m372_9677", "0003m005_293", "0006p270_2574"]


@pytest.fixture
def cutouts():
    paths = sorted(REAL_CUTOUTS.glob("*.npz"))
    if not paths:
        pytest.skip(f"real DR10 cutouts not found at {REAL_CUTOUTS}")
    return [str(p) for p in paths]


def test_scores_real_dr10_cutouts_with_the_models_preprocessing(trained, cutouts, tmp_path):
    out = tmp_path / "scores.csv"
    cal = Calibration(a=0.5, b=-1.0, train_prevalence=0.5, n_fit=100)
    (tmp_path / "cal.json").write_text(__import__("json").dumps(cal.to_dict()))
    assert main(["score", "--model", trained.model_path, *cutouts, "--calibration", str(tmp_path / "cal.json"),
                 "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert len(table) == len(cutouts) == 6 and set(GALAXIES) <= set(table["id"].astype(str))
    assert table["score"].between(0, 1).all() and table["probability"].between(0, 1).all()
    # at a 1e-3 prevalence, a probability can only go down
    assert (table["probability_at_prevalence_0.001"] < table["probability"]).all()
    # every fixture is a lenscat candidate: the cross-match names it
    assert table["known_lens_name"].str.startswith("DESI-").all() and (table["known_lens_sep_arcsec"] < 0.5).all()


def test_scores_paired_parquet_rows(trained, paired_dir):
    path = sorted(Path(paired_dir, "test").glob("*.parquet"))[0]
    table = score(trained.model_path, [str(path)])
    assert len(table) == len(pd.read_parquet(path, columns=["task_id"])) and "probability" not in table
    assert table["nonfinite_pixels"].sum() >= 1  # the simulator plants NaN rows; they are flagged, not dropped


def test_a_six_channel_model_is_refused(tmp_path, trained, cutouts):
    state, sidecar = load_checkpoint(trained.model_path)
    six = build_model("resnet18", 6)
    save_checkpoint(str(tmp_path / "m.pt"), {"model": six.state_dict(), "epoch": 0},
                    {**sidecar, "input_channels": 6, "needs_control": True})
    with pytest.raises(CheckpointError, match="no arc-free control"):
        score(str(tmp_path / "m.pt"), cutouts)
