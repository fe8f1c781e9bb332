"""Promotion in a real Dagster instance (smoke preset): the GO/NO-GO guard on the in-run and the
select-alone paths, versions and the production pointer, champion / challenger, the W&B artifact."""

import json
import shutil
import struct

import dagster as dg
import pytest

from halo_assets.demo import run_retrain
from halo_core import cli
from halo_core.model.registry import add_version, production, versions
from halo_core.outputs import FILE
from tests.factories import LENIENT_GO_NO_GO
from tests.killing import killed_at_commit

GO = [*LENIENT_GO_NO_GO, "log_to_wandb=true"]
# the model's part of the graph: the data and the gates of the GO run stay as they are
FROM_TRAINING = ["trained_model", "calibrated_model", "evaluation_report", "promoted_model"]


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="module")
def go_run(tmp_path_factory, instance, monkeypatch_module):
    monkeypatch_module.delenv("WANDB_API_KEY", raising=False)
    root = tmp_path_factory.mktemp("root")
    result = run_retrain("smoke", GO, str(root), instance)
    assert result.success
    return result, root, root / "smoke" / "promoted_model"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _materialized(result) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}


def _failure(result) -> str:
    """Every failed step's error messages, causes included (Dagster wraps the asset's exception)."""
    messages = []
    for ev in result.all_events:
        error = ev.step_failure_data.error if ev.is_step_failure else None
        while error is not None:
            messages.append(error.message)
            error = error.cause
    return "\n".join(messages)


def _metadata(result, asset: str) -> dict:
    event = next(m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == asset)
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_first_promotion_sets_production_and_names_the_model(go_run):
    result, root, registry = go_run
    meta = _metadata(result, "promoted_model")
    assert meta["promoted"] and meta["production"] == meta["version"] == production(str(registry))
    assert meta["comparison"].startswith("first promotion")
    card = versions(str(registry))[0]
    trained = _metadata(result, "trained_model")
    assert card["data_fingerprint"] == trained["data_fingerprint"] == meta["trained_on_data"]
    report = json.loads((root / "smoke" / "evaluation_report" / "report.json").read_text())
    assert report["model_sha256"] == card["model_sha256"] == meta["model_sha256"]
    assert report["data_fingerprint"] == meta["evaluated_on_data"] == card["evaluated_on"]


def test_no_go_is_refused_in_run_and_when_promoted_model_is_selected_alone(go_run, instance):
    _, root, registry = go_run
    before = production(str(registry)), len(versions(str(registry)))
    strict = [*LENIENT_GO_NO_GO, "go_no_go.min_test_auroc=0.999999"]  # the bounds stop below 1; a smoke model is far from it
    in_run = run_retrain("smoke", strict, str(root), instance, assets=FROM_TRAINING)
    assert _metadata(in_run, "trained_model")["reused"]  # same config and data: the finished run
    assert "evaluation_report" in _materialized(in_run) and "promoted_model" not in _materialized(in_run)
    alone = run_retrain("smoke", strict, str(root), instance, assets=["promoted_model"])
    assert not alone.success and "promoted_model" not in _materialized(alone)
    assert "NO-GO" in _failure(alone) and "test_auroc" in _failure(alone)
    assert (production(str(registry)), len(versions(str(registry)))) == before


def test_a_model_never_evaluated_is_refused(go_run, instance, tmp_path):
    _, root, _ = go_run
    report = root / "smoke" / "evaluation_report" / "report.json"
    shutil.move(report, tmp_path / "report.json")
    try:
        alone = run_retrain("smoke", LENIENT_GO_NO_GO, str(root), instance, assets=["promoted_model"])
    finally:
        shutil.move(tmp_path / "report.json", report)
    assert not alone.success and "never evaluated" in _failure(alone)


def test_worse_challenger_is_kept_out_of_production_then_rollback(go_run, instance, capsys):
    _, root, registry = go_run
    champion = production(str(registry))
    # barely moved from its random init: a challenger clearly worse than production
    worse = run_retrain("smoke", [*LENIENT_GO_NO_GO, "learning_rate=1e-9", "epochs=1"], str(root), instance,
                        assets=FROM_TRAINING)
    meta = _metadata(worse, "promoted_model")
    check = next(e for e in worse.get_asset_check_evaluations() if e.check_name == "not_worse_than_production")
    assert not meta["promoted"] and not check.passed and production(str(registry)) == champion
    assert meta["challenger_auroc"] < meta["production_auroc"], meta["comparison"]
    assert {"production_auroc", "challenger_auroc"} <= set(check.metadata)
    challenger = meta["version"]
    assert [c["version"] for c in versions(str(registry))] == [champion, challenger]

    assert cli.main(["models", "list", "--registry", str(registry)]) == 0
    listed = capsys.readouterr().out
    assert f"* {champion}" in listed and f"  {challenger}" in listed and "2 version(s)" in listed
    assert cli.main(["models", "promote", "--registry", str(registry), challenger]) == 0  # roll forward
    assert production(str(registry)) == challenger
    assert cli.main(["models", "promote", "--registry", str(registry), champion]) == 0  # and back
    assert production(str(registry)) == champion

    model = registry / "versions" / champion / "model.pt"
    no_go = add_version(str(registry), str(model), {"go_no_go": {"go": False, "failed": ["test_auroc"]},
                                                    "test_metrics": versions(str(registry))[0]["test_metrics"],
                                                    "evaluated_on": "x"})
    assert cli.main(["models", "promote", "--registry", str(registry), no_go]) == 2
    err = capsys.readouterr().err
    assert "holds no report.json or gates.json" in err and "re-evaluate" in err and production(str(registry)) == champion


def test_promote_rederives_the_verdict_from_the_versions_evidence_never_the_card(go_run, capsys):
    """A hand-edited card that claims GO once went to production: the CLI read go_no_go from the card."""
    _, _, registry = go_run
    champion = production(str(registry))
    folder = registry / "versions" / champion
    card = json.loads((folder / "model.json").read_text())
    strict = {**card["config"], "go_no_go": {**card["config"]["go_no_go"], "min_test_auroc": 0.999999}}
    claimed = add_version(str(registry), str(folder / "model.pt"), {
        "config": strict, "go_no_go": {"go": True, "failed": []}, "evaluated_on": card["evaluated_on"],
        "test_metrics": card["test_metrics"]},
        evidence={name: (folder / name).read_bytes() for name in ("report.json", "gates.json")})
    assert cli.main(["models", "promote", "--registry", str(registry), claimed]) == 2
    err = capsys.readouterr().err
    assert "NO-GO" in err and "test_auroc" in err and err.count("\n") == 1 and production(str(registry)) == champion


@pytest.mark.parametrize("name", ["../versions/x", "/etc/passwd", "a/b", "..", "20261202T000000Z-deadbeef"])
def test_a_version_name_is_a_name_of_an_existing_version(go_run, capsys, name):
    _, _, registry = go_run
    assert cli.main(["models", "promote", "--registry", str(registry), name]) == 2
    err = capsys.readouterr().err
    assert ("is not a version name" in err or "no version" in err) and err.count("\n") == 1


@pytest.mark.parametrize("pointer", [b"{not json", b'{"version": "/etc/passwd#"}', b'{"other": 1}'])
def test_a_corrupt_pointer_is_a_one_line_error_and_promote_repairs_it(go_run, capsys, tmp_path, pointer):
    _, _, registry = go_run
    path = registry / "production.json"
    champion, saved = production(str(registry)), path.read_bytes()
    try:
        path.write_bytes(pointer)
        for argv, code in ((["score", "--model", str(registry), str(tmp_path / "x.npz"), "--out", str(tmp_path / "s.csv")], 2),
                           (["models", "list", "--registry", str(registry)], 1)):
            assert cli.main(argv) == code
            err = capsys.readouterr().err
            assert f"{path}: corrupt production pointer" in err and "halo models promote --registry" in err
            assert err.count("\n") == 1 and "Traceback" not in err
        assert not (tmp_path / "s.csv").exists()
        assert cli.main(["models", "promote", "--registry", str(registry), champion]) == 0
        assert production(str(registry)) == champion and "production: none -> " in capsys.readouterr().out
    finally:
        path.write_bytes(saved)


def test_a_promotion_killed_at_its_commit_leaves_the_registry_untouched(go_run):
    """`halo models promote`'s case of tests/test_outputs.py's kill test: its registry needs this GO run."""
    _, _, registry = go_run
    champion = production(str(registry))
    killed_at_commit(["models", "promote", "--registry", str(registry), champion], registry, FILE)
    assert production(str(registry)) == champion


def test_a_promotion_that_lost_the_race_changes_nothing_and_names_the_winner(go_run):
    from halo_core.model.registry import RegistryError, set_production

    _, _, registry = go_run
    champion, other = production(str(registry)), versions(str(registry))[-1]["version"]
    with pytest.raises(RegistryError, match=f"production moved to {champion} while this promotion ran"):
        set_production(str(registry), other, "test", expected="20200101T000000Z-00000000")
    assert production(str(registry)) == champion


def test_one_bad_card_is_listed_as_bad_and_the_others_still_are(go_run, capsys):
    _, _, registry = go_run
    card = registry / "versions" / versions(str(registry))[-1]["version"] / "model.json"
    saved = card.read_bytes()
    try:
        card.write_text("{truncated")
        assert cli.main(["models", "list", "--registry", str(registry)]) == 1
        out = capsys.readouterr().out
        assert "BAD card" in out and f"* {production(str(registry))}" in out
    finally:
        card.write_bytes(saved)


def _wandb_records(path):
    """Records of an offline W&B run file (LevelDB log format: 32 KiB blocks of crc32, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):
            pos += left
            continue
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def test_promoted_model_is_a_wandb_artifact_with_its_aliases(go_run):
    result, _, registry = go_run
    meta = _metadata(result, "promoted_model")
    runs = list((registry / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and meta["wandb_run"].endswith(runs[0].stem.removeprefix("run-"))
    records = _wandb_records(runs[0])
    artifact = next(r.artifact for r in records if r.WhichOneof("record_type") == "artifact")
    assert artifact.type == "model" and artifact.name == "halo-smoke"
    assert {"production", meta["version"]} <= set(artifact.aliases)
    config = {i.key: i.value_json for r in records if r.WhichOneof("record_type") == "run" for i in r.run.config.update}
    assert json.loads(config["dagster_run_id"]) == result.run_id


def test_every_asset_killed_at_its_commit_leaves_its_previous_output_whole(go_run, instance):
    """tests/test_outputs.py's kill test for the assets: each dataset or file asset of the GO run,
    materialized again alone and stopped at its commit, finds its previous output as it was. Last in
    this module: the runs it stops are failed runs of its instance."""
    from halo_assets.assets import ASSET_OUTPUTS
    from halo_core.outputs import DATASET

    result, root, _ = go_run
    # assets that write nothing when run again here; their writers are stopped through the CLI instead
    silent = {"promoted_model": "its model is production already (`halo models promote` is stopped above)",
              "real_validation": "skipped: smoke has no real lenses (`halo validate` in tests/test_outputs.py)",
              "selection_function": "no threshold on smoke (tests/assets/test_survey.py stops it on one cell)"}
    writers = sorted(a for a in _materialized(result) if ASSET_OUTPUTS[a] in (DATASET, FILE) and a not in silent)
    assert {"paired_stamps", "filtered_dataset", "shortcut_gates", "calibrated_model", "evaluation_report"} <= set(writers)
    for asset in writers:
        killed_at_commit(lambda: run_retrain("smoke", GO, str(root), instance, assets=[asset]),  # noqa: B023
                         root / "smoke" / asset, ASSET_OUTPUTS[asset])
