"""`halo cutouts` against a loopback stand-in of the Legacy Survey cutout service (tests/cutout_service.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from halo_core import uris
from halo_core.cli import main
from halo_core.data.bricks import brick_names
from halo_core.errors import ContractError, StorageError
from halo_core.survey.cutouts import (
    FAILED,
    FETCHED,
    MANIFEST,
    REFUSED,
    FetchPolicy,
    fetch_cutouts,
    lenscat_targets,
    progress_line,
    targets,
)
from tests.conftest import REAL_CUTOUTS, SHARED_DATA
from tests.cutout_service import CutoutService

LRG_CATALOG = SHARED_DATA / "lrg_parent_catalog.parquet"
FAST = dict(backoff_s=0.01, max_attempts=3, timeout_s=10)


def test_brick_names_match_the_survey_for_every_lrg_of_the_real_catalogue():
    if not LRG_CATALOG.exists():
        pytest.skip(f"{LRG_CATALOG} not found")
    table = pd.read_parquet(LRG_CATALOG, columns=["RA", "DEC", "BRICKNAME"])
    names = brick_names(table["RA"], table["DEC"])
    assert len(table) == 6826
    assert (names == table["BRICKNAME"].str.strip().to_numpy()).all()


def test_brick_names_at_the_poles_the_wrap_and_without_a_position():
    assert list(brick_names([0.0, 359.99, -0.01, 10.0], [-90.0, 0.0, 0.0, 90.0])) == [
        "1800m900", "3598p000", "3598p000", "1800p900"]
    with pytest.raises(ValueError, match="without a brick"):
        brick_names([1.0, np.nan], [0.0, 0.0])
    with pytest.raises(ValueError, match="without a brick"):
        brick_names([1.0], [91.0])


@pytest.fixture(scope="module")
def real():
    """The six shared real cutouts: (ra, dec) -> (HWC cutout, meta)."""
    files = sorted(REAL_CUTOUTS.glob("*.npz"))
    out = {}
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            out[(round(float(z["meta_ra"]), 4), round(float(z["meta_dec"]), 4))] = (
                z["cutout"].copy(), {k: z[k].item() for k in z.files if k.startswith("meta_")})
    return out


def _catalog(positions, **extra) -> pd.DataFrame:
    return pd.DataFrame({"RA": [p[0] for p in positions], "Dec": [p[1] for p in positions], **extra})


def test_fetched_cutouts_are_bit_exact_in_the_shared_layout_with_a_manifest(real, tmp_path):
    with CutoutService({k: v[0] for k, v in real.items()}) as service:
        objects = targets(_catalog(list(real)), "six")
        report = fetch_cutouts(objects, str(tmp_path / "out"), FetchPolicy(base_url=service.url, **FAST))
    assert report.states == {FETCHED: 6, REFUSED: 0, FAILED: 0} and report.requests == 6 and report.retries == 0
    for (ra, dec), (cutout, meta) in real.items():
        brick = meta["meta_brickname"]
        assert brick_names(ra, dec)[0] == brick  # computed, since this catalogue has no brickname
        path = tmp_path / "out" / f"{objects.loc[objects['ra'].round(4) == ra, 'id'].item()}.npz"
        with np.load(path, allow_pickle=False) as z:
            assert z["cutout"].dtype == np.float32 and z["cutout"].shape == (101, 101, 3)
            assert np.array_equal(z["cutout"].view(np.uint32), cutout.view(np.uint32))  # the same bits
            assert str(z["meta_brickname"]) == brick and str(z["meta_galaxy_id"]) == path.stem
            assert float(z["meta_ra"]) == pytest.approx(ra, abs=1e-4)
            assert {f"meta_nan_count_{b}" for b in "grz"} <= set(z.files)
            assert str(z["meta_source"]).startswith(f"{service.url}/cutout.fits?ra=")
            assert "layer=ls-dr10" in str(z["meta_source"]) and "pixscale=0.262&bands=grz&size=101" in str(z["meta_source"])
            assert str(z["meta_fetched_at"]).endswith("+00:00")
    manifest = pd.read_parquet(tmp_path / "out" / MANIFEST)
    assert sorted(manifest["state"]) == [FETCHED] * 6 and manifest["http_status"].tolist() == [200] * 6
    # the manifest is bookkeeping: the cutout readers see the six npz files only
    assert len(uris.find(str(tmp_path / "out"), ".parquet")) == 0
    assert len(uris.find(str(tmp_path / "out"), ".npz")) == 6


def test_every_fault_lands_in_its_state_and_retries_honour_retry_after(real, tmp_path):
    image = next(iter(real.values()))[0]
    faults = {"no_coverage": None, "all_nan_band": ["all_nan_band"], "wrong_shape": ["wrong_shape"],
              "html": ["html"], "truncated": ["truncated"], "dropped": ["dropped"],
              "throttled": ["status429:1", "ok"], "flaky": ["status503", "ok"], "down": ["status503"],
              "missing": ["status404"]}
    positions = {name: (20.0 + i, 1.0 + i / 10) for i, name in enumerate(faults)}
    images = {(round(ra, 4), round(dec, 4)): image for name, (ra, dec) in positions.items() if name != "no_coverage"}
    plan = {(round(ra, 4), round(dec, 4)): faults[name] for name, (ra, dec) in positions.items() if faults[name]}
    rows = [*positions.values(), (np.nan, 3.0), (5.0, 95.0), positions["flaky"]]  # NaN, off the sky, a duplicate
    filters = list(warnings.filters)
    with CutoutService(images, plan) as service:
        report = fetch_cutouts(targets(_catalog(rows), "faults"), str(tmp_path / "out"),
                               FetchPolicy(base_url=service.url, workers=4, **FAST))
        assert warnings.filters == filters  # the workers never touch the process-wide warning filters
        manifest = pd.read_parquet(tmp_path / "out" / MANIFEST).set_index("ra")
        state = {name: manifest.loc[ra, ["state", "reason"]].tolist() for name, (ra, _) in positions.items()}
        assert state == {
            "no_coverage": [REFUSED, "no_coverage"], "all_nan_band": [REFUSED, "no_coverage"],
            "wrong_shape": [REFUSED, "wrong_shape"], "html": [REFUSED, "html_body"],
            "truncated": [REFUSED, "truncated_body"], "dropped": [REFUSED, "truncated_body"],
            "throttled": [FETCHED, ""], "flaky": [FETCHED, ""], "down": [FAILED, "HTTP 503"],
            "missing": [FAILED, "HTTP 404"]}
        assert manifest.loc[positions["down"][0], "http_status"] == 503
        assert manifest.loc[positions["down"][0], "attempts"] == 3 and manifest.loc[positions["missing"][0], "attempts"] == 1
        throttled = [t for ra, _, t in service.requests if round(ra, 4) == positions["throttled"][0]]
        assert len(throttled) == 2 and throttled[1] - throttled[0] >= 0.95  # Retry-After: 1 honoured
        assert service.count(*positions["flaky"]) == 2  # the duplicate row is the same object: no extra request
        bad = manifest[manifest["reason"] == "bad_position"]
        assert len(bad) == 2 and bad["attempts"].tolist() == [0, 0]  # never requested
        flaky_rows = manifest.loc[positions["flaky"][0], "input_rows"].tolist()
        assert flaky_rows == [list(positions).index("flaky"), len(rows) - 1]
        assert report.duplicate_rows == 1 and report.objects == len(positions) + 2
        assert report.requests == len(service.requests)
        assert report.retries == 1 + 1 + 2 + 2  # throttled, flaky, down (3 attempts), dropped (3 attempts)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
            [MANIFEST] + [f"{i}.npz" for i in manifest.loc[manifest["state"] == FETCHED, "id"]])  # no temp files

        # resume: fetched and refused objects are not asked for again; failed ones are
        before = len(service.requests)
        again = fetch_cutouts(targets(_catalog(rows), "faults"), str(tmp_path / "out"),
                              FetchPolicy(base_url=service.url, **FAST))
        asked = {(round(r, 4), round(d, 4)) for r, d, _ in service.requests[before:]}
        assert asked == {(round(ra, 4), round(dec, 4)) for n, (ra, dec) in positions.items() if n in ("down", "missing")}
        assert again.skipped == report.objects - 2 and again.states == report.states


def test_a_killed_fetch_resumes_without_asking_twice(real, tmp_path):
    image = next(iter(real.values()))[0]
    positions = [(30.0 + i / 10, -2.0) for i in range(12)]
    catalog = tmp_path / "lrgs.csv"
    _catalog(positions).to_csv(catalog, index=False)
    out = tmp_path / "out"
    images = {(round(ra, 4), round(dec, 4)): image for ra, dec in positions}
    with CutoutService(images, delay_s=0.3) as service:
        cmd = [sys.executable, "-m", "halo_core.cli", "cutouts", "--catalog", str(catalog), "--out", str(out),
               "--base-url", service.url, "--workers", "2"]
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.npz"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = {p.stem for p in out.glob("*.npz")}
        assert 3 <= len(done) < len(positions)
        for path in out.glob("*.npz"):  # every file there is whole
            np.load(path, allow_pickle=False)["cutout"]
        before = len(service.requests)
        report = fetch_cutouts(targets(pd.read_csv(catalog), str(catalog)), str(out),
                               FetchPolicy(base_url=service.url, **FAST), inputs=(str(catalog),))
        assert report.states[FETCHED] == len(positions) and report.skipped >= len(done)
        asked = service.requests[before:]
        assert len(asked) == len(positions) - report.skipped
        ids = targets(pd.read_csv(catalog), "c").set_index("ra")["id"]
        assert not {ids[round(r, 7)] for r, _, _ in asked} & done  # no object fetched twice


def test_bad_catalogues_and_outputs_are_refused_with_a_reason(tmp_path):
    with pytest.raises(ContractError, match="needs ra and dec"):
        targets(pd.DataFrame({"x": [1.0]}), "cat.csv")
    with pytest.raises(ContractError, match="name different positions"):
        targets(pd.DataFrame({"ra": [1.0, 2.0], "dec": [0.0, 0.0], "id": ["a", "a"]}), "cat.csv")
    with pytest.raises(ContractError, match="cannot name a file"):
        targets(pd.DataFrame({"ra": [1.0], "dec": [0.0], "id": ["../etc"]}), "cat.csv")
    objects = targets(pd.DataFrame({"RA": [1.0], "DEC": [0.0], "BrickName": ["0010p000"]}), "cat.csv")
    assert objects["brickname"].tolist() == ["0010p000"]  # a given brick name is kept
    catalog = tmp_path / "cat.csv"
    catalog.write_text("ra,dec\n1,0\n")
    with pytest.raises(StorageError, match="the input"):
        fetch_cutouts(objects, str(tmp_path), inputs=(str(catalog),))
    assert main(["cutouts", "--catalog", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2


def test_lenscat_targets_follow_the_gradings():
    pytest.importorskip("lenscat")
    confident = lenscat_targets(("confident",))
    both = lenscat_targets(("confident", "probable"))
    assert set(confident["grading"]) == {"confident"} and len(both) > len(confident) > 0
    assert set(both["grading"]) == {"confident", "probable"}
    with pytest.raises(ContractError, match="unknown"):
        lenscat_targets(("certain",))


def test_cli_exits_3_when_some_were_not_fetched_and_reports_progress(real, tmp_path, capsys):
    image = next(iter(real.values()))[0]
    catalog = tmp_path / "c.parquet"
    _catalog([(40.0, 1.0), (41.0, 1.0)], id=["good", "outside"]).to_parquet(catalog)
    with CutoutService({(40.0, 1.0): image}) as service:
        code = main(["cutouts", "--catalog", str(catalog), "--out", str(tmp_path / "o"), "--base-url", service.url])
    out, err = capsys.readouterr()
    assert code == 3 and "'no_coverage': 1" in out and (tmp_path / "o" / "good.npz").exists()
    assert "cutouts 2/2 (100.0 %)" in err and "/s ETA" in err


def test_progress_line_gives_rate_and_eta():
    line = progress_line(50, 200, time.perf_counter() - 10, {"fetched": 49, "refused": 1})
    assert "50/200 (25.0 %)" in line and "5.0/s" in line and "ETA 0m30s" in line and "refused=1" in line
