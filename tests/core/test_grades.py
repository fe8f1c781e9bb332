"""Graded candidates close the loop: the gallery's grade buttons (in headless Chromium), `halo grades import`,
and "not a lens" grades joining the train split only (mechanics on stand-in cutouts, not science)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from halo_core.cli import main
from halo_core.data.filtering import build_filtered_dataset
from halo_core.data.graded import NOT_A_LENS, graded_negatives
from halo_core.data.samples import CONTROL, build_samples
from halo_core.data.shards import data_fingerprint, open_split, read_manifest
from halo_core.errors import ContractError
from halo_core.model.checkpoint import load_sidecar
from halo_core.simulate.injection import read_cutouts
from halo_core.survey.candidates import read_catalog
from halo_core.survey.cutouts import FetchPolicy, fetch_cutouts, targets
from halo_core.survey.grades import import_grades
from halo_core.training.trainer import fit
from tests.browser import webdriver
from tests.cutout_service import CutoutService

ARCSEC = 1 / 3600


@pytest.fixture(scope="module")
def candidates(fixtures, ray_local, scoring_model, tmp_path_factory):
    """Stand-in candidates: cutouts fetched from the loopback service 10" from each real cutout (its
    pixels; no known lens within 5"), scored into a catalogue with its gallery."""
    pytest.importorskip("lenscat")
    rows, images = [], {}
    for lens in read_cutouts(fixtures):
        ra, dec = float(lens.meta["ra"]), float(lens.meta["dec"]) + 10 * ARCSEC
        rows.append((ra, dec))
        images[(round(ra, 4), round(dec, 4))] = lens.cutout
    root = tmp_path_factory.mktemp("graded")
    with CutoutService(images) as service:
        fetch_cutouts(targets(pd.DataFrame({"ra": [r for r, _ in rows], "dec": [d for _, d in rows]}), "c"),
                      str(root / "cutouts"), FetchPolicy(base_url=service.url, backoff_s=0.01))
    assert main(["catalog", "--model", scoring_model.path, "--out", str(root / "catalog"), "--top", "6",
                 str(root / "cutouts")]) == 0
    return root, read_catalog(str(root / "catalog"))


def _csv(path: Path, rows: list[tuple]) -> str:
    pd.DataFrame(rows, columns=["id", "ra", "dec", "grade", "grader", "time"]).to_csv(path, index=False)
    return str(path)


def test_import_lets_the_latest_grade_win_and_reports_unknown_ids(candidates, tmp_path, capsys):
    root, catalog = candidates
    a, b, c = catalog["galaxy_id"].iloc[:3]
    grades = str(tmp_path / "grades.parquet")
    first = _csv(tmp_path / "g1.csv", [(a, 0, 0, "A", "ann", "2026-12-01T10:00:00Z"),
                                       (a, 0, 0, NOT_A_LENS, "bob", "2026-12-01T11:00:00Z"),
                                       (b, 0, 0, "B", "ann", "2026-12-01T10:00:00Z"),
                                       ("nowhere_1", 0, 0, "A", "ann", "2026-12-01T10:00:00Z")])
    assert main(["grades", "import", first, "--catalog", str(root / "catalog"), "--out", grades]) == 3
    out, err = capsys.readouterr()
    assert f"conflicting grades for {a}: the latest, 'not a lens', wins" in out and "nowhere_1" in err
    merged = pd.read_parquet(grades).set_index("id")
    assert merged.loc[a, "grade"] == NOT_A_LENS and merged.loc[a, "grader"] == "bob" and len(merged) == 2
    assert merged.loc[a, "source"] == catalog.set_index("galaxy_id").loc[a, "source"]  # the file it scored
    # a later file merges in: the newer grade of b wins over the earlier import's, c is added
    second = _csv(tmp_path / "g2.csv", [(b, 0, 0, NOT_A_LENS, "cy", "2026-12-02T09:00:00Z"),
                                        (c, 0, 0, "C", "cy", "2026-12-02T09:00:00Z")])
    result = import_grades(second, catalog, grades)
    assert result.galaxies == 3 and result.unknown_ids == [] and [x["id"] for x in result.conflicts] == [b]
    assert pd.read_parquet(grades).set_index("id").loc[b, "grade"] == NOT_A_LENS


def test_bad_grades_files_are_refused_with_the_row(candidates, tmp_path):
    root, catalog = candidates
    galaxy = catalog["galaxy_id"].iloc[0]
    bad_grade = _csv(tmp_path / "bad.csv", [(galaxy, 0, 0, "D", "ann", "2026-12-01T10:00:00Z")])
    with pytest.raises(ContractError, match=r"rows \[2\] have grades \['D'\]"):
        import_grades(bad_grade, catalog, str(tmp_path / "g.parquet"))
    bad_time = _csv(tmp_path / "t.csv", [(galaxy, 0, 0, "A", "ann", "yesterday")])
    with pytest.raises(ContractError, match="ISO time"):
        import_grades(bad_time, catalog, str(tmp_path / "g.parquet"))
    (tmp_path / "cols.csv").write_text("id,grade\nx,A\n")
    assert main(["grades", "import", str(tmp_path / "cols.csv"), "--catalog", str(root / "catalog"),
                 "--out", str(tmp_path / "g.parquet")]) == 2
    assert not (tmp_path / "g.parquet").exists()  # nothing half-written


def test_graded_negatives_train_only_and_retrain_finds_them(candidates, fixtures, smoke_cfg, paired_dir, filtered_dir,
                                                          tmp_path):
    """The smoke loop: grade, import, rebuild the filtered dataset, retrain; the graded negatives are in
    the new training data, none in val or test, and the data fingerprint moved."""
    root, catalog = candidates
    ids = catalog["galaxy_id"].tolist()
    test_brick = str(open_split(filtered_dir, "test").meta["brickname"].iloc[0])
    grades = str(tmp_path / "grades.parquet")
    import_grades(_csv(tmp_path / "g.csv", [(i, 0, 0, NOT_A_LENS if k < 5 else "A", "ann", "2026-12-01T10:00:00Z")
                                            for k, i in enumerate(ids)]), catalog, grades)
    # one graded galaxy sits in a test brick, one on a known lens: both must be dropped and counted
    table = pd.read_parquet(grades)
    table.loc[table["id"] == ids[0], "brick"] = test_brick
    lens = read_cutouts(fixtures)[0]  # a lenscat entry
    table.loc[table["id"] == ids[1], ["ra", "dec"]] = [float(lens.meta["ra"]), float(lens.meta["dec"]) + 2 * ARCSEC]
    table.to_parquet(grades)
    cfg = smoke_cfg.model_copy(update={"graded_negatives_path": grades})
    report = build_filtered_dataset(cfg, paired_dir, str(tmp_path / "filtered"))
    assert report.graded_negatives == {"graded_not_a_lens": 5, "dropped_in_val_test_bricks": 1,
                                       "dropped_near_known_lens": 1, "dropped_nonfinite": 0, "added": 3}
    manifest = read_manifest(str(tmp_path / "filtered"))
    assert manifest["graded_negatives"]["added"] == 3
    train = open_split(str(tmp_path / "filtered"), "train")
    graded_rows = np.flatnonzero(train.meta["graded_negative"].fillna(False).to_numpy(bool))
    assert sorted(train.meta.loc[graded_rows, "task_id"]) == sorted(f"graded-{i}" for i in ids[2:5])
    for split in ("val", "test"):
        assert "graded_negative" not in open_split(str(tmp_path / "filtered"), split).meta
    # pixels: the catalogue's own cutout file, stamp = control, preprocessed like every other row
    row = graded_rows[0]
    assert np.array_equal(train.pairs[row, 0], train.pairs[row, 1])
    samples = build_samples(train.meta, cfg.sample_construction, cfg.seed)
    graded = np.isin(samples.rows, graded_rows)
    assert graded.sum() == 3 and (samples.labels[graded] == 0).all() and (samples.slots[graded] == CONTROL).all()
    assert data_fingerprint(str(tmp_path / "filtered")) != data_fingerprint(filtered_dir)
    result = fit(cfg.model_copy(update={"epochs": 1}), str(tmp_path / "filtered"), str(tmp_path / "run"))
    sidecar = load_sidecar(result.model_path)
    assert sidecar["data_fingerprint"] == data_fingerprint(str(tmp_path / "filtered"))
    assert result.samples["train"]["negatives"] > 0


def test_graded_negatives_need_the_grades_file(tmp_path):
    with pytest.raises(ContractError, match="halo grades import"):
        graded_negatives(str(tmp_path / "none.parquet"), None, set(), 5.0)


# --------------------------------------------------------------------------------- the buttons, in Chromium

def test_grade_buttons_save_a_grades_csv_that_imports(candidates, tmp_path):
    """The downloaded file is read back from the blob the download button saves."""
    root, catalog = candidates
    gallery = root / "catalog" / "_gallery" / "index.html"
    with webdriver(tmp_path / "profile") as browser:
        browser.open(gallery.as_uri())
        rows = browser.script("return [...document.querySelectorAll('tr.candidate')].map(r => r.dataset.id)")
        assert sorted(rows) == sorted(catalog["galaxy_id"])
        browser.call("POST", f"/element/{browser.element('#grader')}/value", {"text": "tester"})
        first, second = rows[0], rows[1]
        for galaxy, grade in ((first, "A"), (second, "not a lens"), (first, "B")):  # first: a change of mind
            css = f"tr[data-id={json.dumps(galaxy)}] button[data-grade={json.dumps(grade)}]"
            browser.call("POST", f"/element/{browser.element(css)}/click", {})
        shown = browser.script("return [document.getElementById('graded').textContent, "
                               f"document.querySelector('tr[data-id={json.dumps(first)}] button.chosen').dataset.grade]")
        assert shown == ["3", "B"]
        # the download button: capture the link it clicks and read the blob it saves
        browser.script("HTMLAnchorElement.prototype.click = function () {"
                       " window.saved = {name: this.download, href: this.href}; };")
        browser.call("POST", f"/element/{browser.element('#download')}/click", {})
        saved = browser.call("POST", "/execute/async", {"script": "const done = arguments[0]; fetch(window.saved.href)"
                                                                  ".then(r => r.text()).then(t => done([window.saved.name, t]));",
                                                        "args": []})
    name, text = saved
    assert name == "grades.csv"
    (tmp_path / name).write_text(text)
    table = pd.read_csv(tmp_path / name)
    assert list(table.columns) == ["id", "ra", "dec", "grade", "grader", "time"]
    assert table["grade"].tolist() == ["A", NOT_A_LENS, "B"] and set(table["grader"]) == {"tester"}
    result = import_grades(str(tmp_path / name), catalog, str(tmp_path / "grades.parquet"))
    assert result.imported == 3 and result.by_grade == {"B": 1, NOT_A_LENS: 1}
    assert [c["id"] for c in result.conflicts] == [first]
