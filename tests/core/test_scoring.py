from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from halo_core.cli import main
from halo_core.errors import CheckpointError
from halo_core.evaluation.calibration import Calibration
from halo_core.model.checkpoint import load_checkpoint, save_checkpoint
from halo_core.model.network import build_model
from halo_core.survey.scoring import EXIT_SOME_REFUSED, score
from tests.conftest import REAL_CUTOUTS

GALAXIES = ["0001m040_4091", "0001m060_2396", "0001m372_9677", "0003m005_293", "0006p270_2574"]


@pytest.fixture
def cutouts():
    return [str(p) for p in sorted(REAL_CUTOUTS.glob("*.npz"))]


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


def _cutout(path, image):
    np.savez(path, cutout=image.astype(np.float32), meta_galaxy_id=np.array(path.stem))
    return str(path)


def test_cutouts_with_nonfinite_core_or_too_many_nan_are_not_scored(trained, tmp_path, capsys):
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 0.01, (101, 101, 3))
    core_nan, all_nan, many_nan, few_nan = (clean.copy() for _ in range(4))
    core_nan[50, 50, 1] = np.nan  # inside the central 10x10 of the 64x64 crop
    all_nan[:] = np.nan  # the probe: scored 0.61
    many_nan[18:30, 18:82, :] = np.inf  # 19 % of the crop, outside the core
    few_nan[20, 20:30, 0] = np.nan  # 10 of 12288 pixels, outside the core: scored
    paths = [_cutout(tmp_path / f"{n}.npz", a) for n, a in
             [("clean", clean), ("core_nan", core_nan), ("all_nan", all_nan), ("many_nan", many_nan), ("few_nan", few_nan)]]
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", trained.model_path, *paths, "--out", str(out)]) == EXIT_SOME_REFUSED == 3
    table = pd.read_csv(out).set_index("id")
    assert table["status"].to_dict() == {"clean": "scored", "core_nan": "refused: nonfinite_core",
                                         "all_nan": "refused: nonfinite_core", "many_nan": "refused: too_many_nonfinite",
                                         "few_nan": "scored"}
    assert table.loc[["core_nan", "all_nan", "many_nan"], "score"].isna().all()
    assert table.loc[["clean", "few_nan"], "score"].between(0, 1).all()
    assert "2 scored, 3 not scored" in capsys.readouterr().out
    assert main(["score", "--model", trained.model_path, paths[0], paths[4], "--out", str(out)]) == 0


def test_unreadable_inputs_are_refused_rows_naming_the_file(trained, tmp_path, capsys, caplog):
    """A corrupt input file is a refused row, never an error that loses the other rows."""
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, cutout=np.array([{"evil": 1}], dtype=object))
    (tmp_path / "folder.npz").mkdir()
    for path, reason in [(text, "corrupt_npz"), (pickled, "pickled_object"), (tmp_path / "folder.npz", "not_a_file"),
                         (tmp_path / "missing.npz", "missing_file")]:
        caplog.clear()
        assert main(["score", "--model", trained.model_path, str(path), "--out", str(tmp_path / "s.csv")]) == 3
        table = pd.read_csv(tmp_path / "s.csv")
        assert table["status"].tolist() == [f"refused: {reason}"] and table["score"].isna().all()
        assert f"{path}: refused ({reason})" in caplog.text, caplog.text


def test_a_card_without_a_precision_record_is_scored_in_fp32_and_says_so(trained, tmp_path, cutouts, caplog):
    state, sidecar = load_checkpoint(trained.model_path)
    bare = {k: v for k, v in sidecar.items() if k != "precision"}
    save_checkpoint(str(tmp_path / "m.pt"), state, bare)
    table = score(str(tmp_path / "m.pt"), cutouts[:2])
    assert (table["precision"] == "fp32 (not on the card)").all()
    assert "does not record the precision" in caplog.text
    assert (score(trained.model_path, cutouts[:2])["precision"] == sidecar["precision"]).all()


def test_halo_score_streams_in_chunks_and_writes_every_row(trained, paired_dir, tmp_path):
    from halo_core.survey.scoring import ScoringModel, score_chunks

    paths = [str(p) for p in sorted(Path(paired_dir, "test").glob("*.parquet"))]
    scorer = ScoringModel.load(trained.model_path)
    chunks = list(score_chunks(scorer, paths, chunk_rows=16))
    whole = score(trained.model_path, paths)
    assert max(len(c) for c in chunks) == 16 and sum(len(c) for c in chunks) == len(whole)
    streamed = pd.concat(chunks, ignore_index=True)
    np.testing.assert_allclose(streamed["score"], whole["score"], atol=1e-6, rtol=0)  # batch size does not matter
    out = tmp_path / "s.csv"
    main(["score", "--model", trained.model_path, *paths, "--out", str(out)])
    assert len(pd.read_csv(out)) == len(whole)
