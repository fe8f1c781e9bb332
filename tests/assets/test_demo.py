"""`python -m halo_assets.demo` as a script sees it: exit 0 on GO (tests/test_end_to_end.py), 1 on
NO-GO, 2 on a crash; an expected check failure prints no stack trace, a crash keeps its traceback; the
run is tagged with its verdict. Both runs here stop in their first steps, so they take seconds."""

import dagster as dg
import pytest

from halo_assets import demo


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_failed_blocking_check_exits_1_as_a_verdict_without_a_stack_trace(home, capfd):
    # a quarantine limit the smoke data (several % NaN rows by design) cannot meet: finite_pixels fails
    status = demo.main(["--preset", "smoke", "--root", str(home / "data"), "--set", "go_no_go.max_quarantine_frac=0.0001"])
    out, err = capfd.readouterr()
    assert status == demo.NO_GO == 1
    assert "Stack Trace" not in err and "Traceback" not in err and " - ERROR - " not in err, err[-3000:]
    assert "NO-GO: blocking check filtered_dataset.finite_pixels failed" in err
    assert "trained_model not started: NO-GO (filtered_dataset.finite_pixels failed)" in err
    row = next(line.split() for line in out.splitlines() if "filtered_dataset.finite_pixels" in line)
    assert row[0] == "FAIL" and float(row[2]) > 0.0001 and row[3:6] == ["quarantined", "share", "<="]
    assert "verdict: NO-GO: not promoted; 1 blocking check(s) failed: filtered_dataset.finite_pixels" in out
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
    assert run.tags[demo.VERDICT_TAG] == "NO-GO: not promoted"
    assert run.tags[demo.FAILED_TAG].startswith("filtered_dataset.finite_pixels 0.01")


def test_a_crash_exits_2_and_keeps_its_traceback(home, capfd):
    status = demo.main(["--preset", "smoke", "--root", str(home / "data"), "--set", f"train_path={home / 'missing'}"])
    out, err = capfd.readouterr()
    assert status == demo.CRASHED == 2
    assert " - ERROR - " in err and "Stack Trace" in err  # Dagster's own failure record, traceback included
    assert "ERROR in step paired_stamps" in out and "verdict: none: a step crashed" in out
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
    assert run.tags[demo.VERDICT_TAG] == "ERROR: a step crashed"


def test_a_config_the_user_can_fix_exits_2_with_the_message(home, capfd):
    assert demo.main(["--preset", "smoke", "--root", str(home / "data"), "--set", "epochs=0"]) == demo.CRASHED
    assert "epochs" in capfd.readouterr().err
