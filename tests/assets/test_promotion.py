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
from tests.factories import LENIENT_GO_NO_GO

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
    assert "NO-GO" in capsys.readouterr().err and production(str(registry)) == champion


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
