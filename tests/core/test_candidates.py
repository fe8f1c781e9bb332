import json
import logging
from pathlib import Path

import numpy as np
import pytest

from halo_core.cli import main
from halo_core.evaluation.calibration import Calibration
from halo_core.model.checkpoint import load_checkpoint, save_checkpoint
from halo_core.survey.candidates import CatalogModel, brick_index, build_catalog, read_catalog
from halo_core.survey.scoring import score
from tests.conftest import REAL_CUTOUTS

CAL = Calibration(a=0.8, b=-0.5, train_prevalence=0.5, n_fit=100)


@pytest.fixture(scope="module")
def promoted(trained, tmp_path_factory):
    """The smoke model with a promoted model's card: calibration and test operating points."""
    state, sidecar = load_checkpoint(trained.model_path)
    path = str(tmp_path_factory.mktemp("promoted") / "model.pt")
    points = [{"fpr": 1e-2, "tpr": 0.6, "threshold": 0.7}, {"fpr": 1e-3, "tpr": None, "threshold": None}]
    save_checkpoint(path, state, {**sidecar, "calibration": CAL.to_dict(), "test_metrics": {"tpr_at_fpr": points}})
    return path


def _inputs(paired_dir):
    parquet = sorted(str(p) for p in Path(paired_dir, "test").glob("*.parquet"))
    npz = sorted(str(p) for p in REAL_CUTOUTS.glob("*.npz"))
    return parquet, npz


def test_catalogue_scores_equal_halo_score_and_partition_by_brick(ray_local, promoted, paired_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="halo_core.progress")
    caplog.set_level(logging.INFO, logger="halo_core.survey.candidates")
    parquet, npz = _inputs(paired_dir)
    model = CatalogModel.from_checkpoint(promoted)
    report = build_catalog(model, [*parquet, str(REAL_CUTOUTS)], str(tmp_path / "cat"), batch_size=16)
    # off a terminal (pytest captures stderr) the progress is a log line per tenth, of a total counted
    # before any blob is read (parquet footers, one per npz)
    progress = [r.getMessage() for r in caplog.records if r.name == "halo_core.progress"]
    assert progress and progress[-1].startswith(f"halo catalog: {report.rows:,}/{report.rows:,} cutouts (100%)")
    # where the time went, by stage (benchmarks/survey.py reads it), also on the build's last log line
    stages = {"ray_start", "workers_start", "decode", "preprocess", "forward", "write", "waiting"}
    assert set(report.timings) == stages and all(s >= 0 for s in report.timings.values())
    assert report.timings["forward"] > 0 and report.timings["decode"] > 0
    last = [r.getMessage() for r in caplog.records if r.name == "halo_core.survey.candidates"][-1]
    assert all(f"{stage} " in last for stage in stages)
    catalog = read_catalog(str(tmp_path / "cat"))
    reference = score(promoted, [*parquet, *npz])
    assert len(catalog) == len(reference) == report.rows
    merged = catalog.merge(reference, left_on="galaxy_id", right_on="id")
    # halo score's own refusals (a non-finite core, too many non-finite pixels), with NaN scores
    refused = merged["status_y"] != "scored"
    assert (merged.loc[refused, "status_x"] == merged.loc[refused, "status_y"]).all()
    assert merged.loc[refused, "status_x"].str.startswith("refused: ").all()
    assert (merged.loc[~refused, "status_x"] == "scored").all() and merged.loc[refused, "score_x"].isna().all()
    scored = merged[~refused]
    # the known lens at each position, matched as halo score matches it: all six real fixtures are lenscat entries
    assert (merged["known_lens_name_x"].fillna("") == merged["known_lens_name_y"].fillna("")).all()
    assert merged.loc[merged["source_x"].str.endswith(".npz"), "known_lens_name_x"].notna().sum() == len(npz) == 6
    # one engine, in the precision on the card (the trained fixture records it): equal scores, both say which
    assert set(merged["precision_x"]) == set(merged["precision_y"]) == {load_checkpoint(promoted)[1]["precision"]}
    np.testing.assert_allclose(scored["score_x"], scored["score_y"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(scored["probability_x"], scored["probability_y"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(scored["probability_at_prevalence"], scored["probability_at_prevalence_0.001"],
                               atol=1e-6, rtol=0)
    # one partition folder per brick, holding exactly that brick's galaxies
    bricks = sorted(p.name.removeprefix("brick=") for p in (tmp_path / "cat").glob("brick=*"))
    assert bricks == sorted(set(reference["brickname"].fillna("unknown")))
    one = read_catalog(str(tmp_path / "cat"), [bricks[0]])
    assert set(one["galaxy_id"]) == set(reference.loc[reference["brickname"] == bricks[0], "id"])
    assert (catalog["model_version"] == model.version).all() and model.version.startswith("sha256:")
    assert report.above_threshold == int((scored["probability_x"] >= 0.7).sum())
    assert report.top[0]["probability"] == scored["probability_x"].max()

    # a brick rebuilt alone (as a Dagster partition is) replaces its folder and leaves the others be
    brick, files = next(iter(brick_index(parquet).items()))
    others = {p: p.read_bytes() for p in (tmp_path / "cat").glob("brick=*/*.parquet") if f"brick={brick}" not in str(p)}
    previous = {p.name for p in (tmp_path / "cat" / f"brick={brick}").glob("*.parquet")}
    again = build_catalog(model, files, str(tmp_path / "cat"), bricks=[brick])
    assert set(again.bricks) == {brick} and again.rows == int((reference["brickname"] == brick).sum())
    assert set(again.timings) == stages
    # its new files under new names, named by its marker; the previous build's files gone
    now = {p.name for p in (tmp_path / "cat" / f"brick={brick}").glob("*.parquet")}
    assert now and not now & previous
    assert set(json.loads((tmp_path / "cat" / f"brick={brick}" / "_brick.json").read_text())["files"]) == now
    assert {p: p.read_bytes() for p in others} == others
    assert sorted(read_catalog(str(tmp_path / "cat"))["galaxy_id"]) == sorted(catalog["galaxy_id"])


def test_halo_catalog_cli(ray_local, promoted, paired_dir, tmp_path):
    _, npz = _inputs(paired_dir)
    out = tmp_path / "cat"
    assert main(["catalog", "--model", promoted, "--out", str(out), "--top", "3", *npz]) == 0
    gallery = (out / "_gallery" / "index.html").read_text()
    assert gallery.count("<tr class=\"candidate\"") == 3 and "data:image/png;base64," in gallery
    assert len(read_catalog(str(out))) == len(npz)
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["catalog", "--model", promoted, "--out", str(tmp_path), *npz]) == 2  # never wipes a foreign folder
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_failed_rebuild_keeps_the_whole_previous_catalogue_and_a_corrupt_file_is_a_refused_row(
        ray_local, promoted, paired_dir, tmp_path, capsys):
    """H1: the catalogue was deleted before the new one was written; a 6-channel model (its actors fail)
    left an empty catalogue. A corrupt parquet aborted the run; half the rows refused still exited 0."""
    _, npz = _inputs(paired_dir)
    out = tmp_path / "cat"
    assert main(["catalog", "--model", promoted, "--out", str(out), *npz]) == 0
    before = sorted(read_catalog(str(out))["galaxy_id"])
    state, sidecar = load_checkpoint(promoted)
    six = str(tmp_path / "six" / "model.pt")
    save_checkpoint(six, state, {**sidecar, "needs_control": True, "input_channels": 6})
    assert main(["catalog", "--model", six, "--out", str(out), *npz]) == 2
    assert sorted(read_catalog(str(out))["galaxy_id"]) == before
    capsys.readouterr()

    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not a parquet file")
    assert main(["catalog", "--model", promoted, "--out", str(out), *npz, str(tmp_path / "broken.parquet")]) == 3
    catalog = read_catalog(str(out))
    assert len(catalog) == len(npz) + 1
    assert catalog.loc[catalog["galaxy_id"] == "broken", "status"].tolist() == ["refused: corrupt_file"]
    assert "corrupt_file" in capsys.readouterr().out
