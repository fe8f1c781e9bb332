import json
import subprocess
import sys
from pathlib import Path

from halo_core.cli import main


def test_halo_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "halo_core.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("simulate", "filter", "train", "evaluate", "config"):
        assert command in out.stdout


def test_config_errors_exit_2_with_the_key(capsys):
    assert main(["config", "--preset", "demo", "--set", "epochz=3"]) == 2
    assert "epochz" in capsys.readouterr().err


def test_simulate_filter_train_evaluate_from_the_command_line(tmp_path, capsys):
    raw, filt, run, rep = (str(tmp_path / d) for d in ("raw", "filt", "run", "rep"))
    common = ["--preset", "smoke", "--set", "epochs=1"]
    assert main(["simulate", *common, "--out", raw]) == 0
    assert main(["filter", *common, "--data", raw, "--out", filt]) == 0
    assert main(["train", *common, "--data", filt, "--out", run]) == 0
    assert main(["evaluate", *common, "--data", filt, "--model", f"{run}/model.pt", "--out", rep]) == 0
    out = capsys.readouterr().out
    assert "split integrity: ok" in out and "test n=" in out and (tmp_path / "rep" / "report.html").exists()


def test_gates_command_prints_the_gate_table_as_json_and_exits_1_on_a_failure(capsys, filtered_dir):
    small = ["--set", "gates.n_samples=60", "--set", "gates.null_n_samples=60", "--data", filtered_dir]
    code = main(["gates", "--preset", "smoke", *small])
    captured = capsys.readouterr()
    table = json.loads(captured.out)
    assert sorted(table["gates"]) == ["core", "metadata", "radial"]
    core = table["gates"]["core"]
    assert 0 < core["n"] <= 60 and core["n_features"] == 300 and 0 <= core["auc"] <= 1 and core["strata"]
    assert len(core["ci95"]) == 2
    null = table["selection_null"]
    assert null["informative"] and sorted(null["probes"]) == ["core", "metadata", "radial"]
    assert code == (0 if table["passed"] else 1) and table["passed"] == (null["passed"] and table["deployable"])
    assert "selection null" in captured.err or "null core" in captured.err  # the readable summary
    assert main(["gates", "--preset", "smoke", "--set", "gates.max_null_auc=0.5", *small]) == (
        0 if json.loads(capsys.readouterr().out)["selection_null"]["max_auc"] <= 0.5 else 1)
    # the plan's 6-channel input needs the control stamp: not deployable, so the gates fail
    assert main(["gates", "--preset", "smoke", "--set", "sample_construction=paired_6ch",
                 "--set", "input_channels=6", *small]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["deployable"] is False and out["passed"] is False and out["selection_null"]["informative"] is False


def test_halo_core_imports_without_dagster():
    code = ("import sys, pkgutil, importlib, halo_core; sys.modules['dagster'] = None\n"
            "for m in pkgutil.walk_packages(halo_core.__path__, 'halo_core.'): importlib.import_module(m.name)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_review_prints_gen5_prime_findings_and_exits_1_on_its_error(capsys):
    # the plan's paths are S3 prefixes; emptied, the budget counts the embedded dataset
    embedded = [arg for key in ("train_path", "val_path", "test_path") for arg in ("--set", f"{key}=")]
    assert main(["review", "--preset", "gen5_prime", *embedded]) == 1
    out = capsys.readouterr().out
    for rule in ("WARN  lr_annealed_at_last_epoch", "WARN  patience_outlasts_restart_cycles",
                 "WARN  targets_measured_by_metrics", "ERROR input_deployable"):
        assert rule in out, rule
    # INFO here, WARN (over 24 h) when the measured step rate is that of a machine shared by other jobs
    assert "INFO  training_budget" in out or "WARN  training_budget" in out
    assert "50 epochs x 9,600 train samples" in out  # 4,800 simulated pairs, two samples each and "samples/s on cpu" in out


def test_review_of_a_deployable_config_exits_0(capsys):
    assert main(["review", "--preset", "recommended", "--set", "input_channels=3"]) == 0
    assert "input_deployable" not in capsys.readouterr().out


def test_a_preset_path_is_refused_by_the_cli_and_the_resource(tmp_path, capsys):
    import pytest

    from halo_assets.resources import HaloSettings

    evil = tmp_path / "evil.yaml"
    evil.write_text("epochs: 1\n")
    assert main(["config", "--preset", str(tmp_path / "evil")]) == 2
    assert "a preset is a name, not a path" in capsys.readouterr().err
    with pytest.raises(Exception, match="a preset is a name, not a path"):
        HaloSettings(preset="../../somewhere/evil", root_uri=str(tmp_path))


def test_score_prevalence_outside_0_1_is_a_one_line_error(tmp_path, capsys, trained):
    for bad in ("5", "-1", "0", "1"):
        assert main(["score", "--model", trained.model_path, str(tmp_path / "x.npz"), "--prevalence", bad,
                     "--out", str(tmp_path / "s.csv")]) == 2
        err = capsys.readouterr().err
        assert "prevalence" in err and err.count("\n") == 1


def test_evaluate_a_per_epoch_checkpoint_is_a_one_line_error(tmp_path, capsys, filtered_dir, trained):
    best = str(Path(trained.model_path).parent / "best.pt")
    assert main(["evaluate", "--preset", "smoke", "--data", filtered_dir, "--model", best,
                 "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "best.pt: a per-epoch checkpoint" in err and err.count("\n") == 1
    assert not (tmp_path / "rep").exists()


def test_an_output_that_cannot_be_written_is_a_one_line_error_before_any_work(tmp_path, capsys, filtered_dir,
                                                                               paired_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder cannot be made inside a file, even by root (tests run as root here)
    assert main(["train", "--preset", "smoke", "--data", filtered_dir, "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{blocker / 'run'}: cannot write there" in err and err.count("\n") == 1
    assert "epoch" not in err and not list(tmp_path.glob("**/*.pt"))
    assert main(["filter", "--preset", "smoke", "--data", paired_dir, "--out", str(blocker / "filtered")]) == 2
    err = capsys.readouterr().err
    assert str(blocker) in err and err.count("\n") == 1


def test_a_users_config_file_works_with_set_on_top(tmp_path, capsys):
    path = tmp_path / "my_run.yaml"
    path.write_text("base: demo\noptimizer: AdamW\nscheduler: {type: CosineAnnealingWarmRestarts, T_0: 5}\n")
    assert main(["config", "--config", str(path), "--set", "epochs=7"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 7" in out and "T_0: 5" in out and "batch_size: 64" in out  # demo's, under the file's keys
    path.write_text("pretrained: true\n")
    assert main(["config", "--config", str(path)]) == 2
    assert "pretrained: true: no pretrained weights can be downloaded" in capsys.readouterr().err
