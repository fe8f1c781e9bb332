"""One set of refusal rules for every reader of real cutouts (data.stamps.refusal): the same bad
cutouts, fed to `halo score`, the catalogue's decode-and-score, the injection reader (inject, validate,
the selection function's real hosts) and `halo inject`, are refused for the same reasons; the six real
cutouts pass with margin."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from halo_core.cli import main
from halo_core.data.stamps import MAX_ABS_PIXEL_NMGY, REFUSED, read_checked_cutout, read_cutout
from halo_core.simulate.injection import read_cutouts
from halo_core.survey.candidates import ScoringWorker
from halo_core.survey.scoring import SCORED, score


def _npz(cutout: np.ndarray, brick: str = "0001m040") -> bytes:
    buf = io.BytesIO()
    np.savez(buf, cutout=cutout, meta_ra=np.float64(1.0), meta_dec=np.float64(-4.0), meta_brickname=np.array(brick))
    return buf.getvalue()


def _sky(rng, shape=(101, 101, 3)) -> np.ndarray:
    return rng.normal(0, 0.003, shape).astype(np.float32)


def bad_cutouts(folder: Path) -> dict[str, str]:
    """file name -> the reason every reader must give."""
    rng = np.random.default_rng(0)
    core_nan = _sky(rng)
    core_nan[50, 50, 1] = np.nan
    many_nan = _sky(rng)
    many_nan[:40] = np.nan  # a third of the central stamp, none of its core
    huge = _sky(rng)
    huge[30, 30, 0] = 1e30  # finite, absurd: once a `scored` row with an empty score
    cases = {
        "core_nan.npz": (_npz(core_nan), "nonfinite_core"),
        "many_nan.npz": (_npz(many_nan), "too_many_nonfinite"),
        "huge.npz": (_npz(huge), "pixel_out_of_range"),
        "integer.npz": (_npz((_sky(rng) * 1000).astype(np.int16)), "bad_dtype"),
        "small.npz": (_npz(_sky(rng, (50, 50, 3))), "bad_shape"),
        "corrupt.npz": (b"PK\x03\x04 not really a zip", "corrupt_npz"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, _) in cases.items():
        (folder / name).write_bytes(data)
    return {name: reason for name, (_, reason) in cases.items()}


def test_the_six_real_cutouts_pass_with_margin(fixtures):
    for path in sorted(Path(fixtures).glob("*.npz")):
        cutout, _, reason = read_checked_cutout(str(path), str(path), 0.01)
        assert reason is None, path
        assert np.nanmax(np.abs(cutout)) < MAX_ABS_PIXEL_NMGY / 1000  # three orders of magnitude of margin


def test_the_rules_refuse_each_bad_cutout_for_its_reason(tmp_path):
    for name, reason in bad_cutouts(tmp_path).items():
        assert read_checked_cutout(str(tmp_path / name), name, 0.01)[2] == reason, name


def test_the_injection_reader_refuses_the_same_cutouts_for_the_same_reasons(tmp_path, fixtures):
    """read_cutouts serves `halo inject`, paired_stamps, `halo validate` and the selection function's hosts."""
    expected = bad_cutouts(tmp_path / "mixed")
    for good in sorted(Path(fixtures).glob("*.npz")):
        shutil.copy(good, tmp_path / "mixed" / good.name)
    refused = []
    usable = read_cutouts(str(tmp_path / "mixed"), refused=refused)
    assert len(usable) == 6 and all(np.isfinite(c.control).all() for c in usable)
    assert {Path(r.source).name: r.reason for r in refused} == expected
    with pytest.raises(Exception, match="refused"):  # strict callers get the first refusal as an error
        read_cutouts(str(tmp_path / "mixed" / "huge.npz"))


def test_halo_inject_counts_the_refusals_and_exits_3(tmp_path, fixtures, capsys):
    expected = bad_cutouts(tmp_path / "mixed")
    for good in sorted(Path(fixtures).glob("*.npz")):
        shutil.copy(good, tmp_path / "mixed" / good.name)
    assert main(["inject", "--preset", "smoke", str(tmp_path / "mixed"), "--out", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert f"{len(expected)} cutout(s) refused" in err
    assert all(reason in err for reason in expected.values())


def test_score_and_the_catalogue_refuse_the_same_cutouts_and_never_report_an_empty_score(tmp_path, trained,
                                                                                       fixtures, capsys):
    expected = bad_cutouts(tmp_path)
    files = [str(tmp_path / n) for n in expected] + [str(tmp_path / "missing.npz")]
    table = score(trained.model_path, files)
    statuses = dict(zip(table["source"].map(lambda s: Path(s).name), table["status"]))
    assert statuses == {**{n: REFUSED + r for n, r in expected.items()}, "missing.npz": REFUSED + "missing_file"}
    assert table["score"].isna().all()

    good = sorted(Path(fixtures).glob("*.npz"))[0]
    assert main(["score", "--model", trained.model_path, str(good), *files, "--out", str(tmp_path / "s.csv")]) == 3
    out = capsys.readouterr().out
    assert "1 scored" in out and f"{len(files)} not scored" in out

    worker = ScoringWorker(_catalog_model(trained), bricks=None, batch_size=2, torch_threads=1)  # 2: chunks
    parts = list(worker({"files": [[*files[:-1], str(good)]]}))
    scored = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    got = dict(zip((Path(p).name for p in scored["source"]), scored["status"]))
    assert got == {**{n: REFUSED + r for n, r in expected.items()}, good.name: SCORED}
    ok = scored["status"] == SCORED
    assert np.isfinite(scored["score"][ok]).all() and np.isnan(scored["score"][~ok]).all()


def _catalog_model(trained):
    from halo_core.evaluation.calibration import Calibration
    from halo_core.survey.candidates import CatalogModel

    return CatalogModel.from_checkpoint(trained.model_path, calibration=Calibration(1.0, 0.0, 0.5, 10))


def test_an_integer_pixel_cutout_is_refused_by_the_decoder_itself(tmp_path):
    (tmp_path / "i.npz").write_bytes(_npz(np.zeros((101, 101, 3), np.int32)))
    with pytest.raises(Exception, match="want floating-point nanomaggies"):
        read_cutout(str(tmp_path / "i.npz"))
