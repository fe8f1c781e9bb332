"""Sensors evaluated with Dagster's test contexts over a real instance; alerts go to a real HTTP
receiver on 127.0.0.1."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from halo_assets.resources import PROFILES, HaloSettings
from halo_assets.sensors import (
    AlertWebhook, check_failure_alert_on_failure, check_failure_alert_on_success, new_data_sensor, register_profiles,
    run_failure_alert,
)
from halo_core.config import preset_names
from tests.factories import three_splits


@pytest.fixture
def receiver():
    """A webhook on 127.0.0.1 that records every JSON body posted to it."""
    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", bodies
    server.shutdown()


@dg.asset
def probe():
    return 1


@dg.asset_check(asset=probe, blocking=True)
def probe_error():
    return dg.AssetCheckResult(passed=False, metadata={"auroc": 0.5, "threshold": 0.97})


@dg.asset_check(asset=probe)
def probe_warn():
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"gap": 0.3})


@dg.asset_check(asset=probe)
def probe_ok():
    return dg.AssetCheckResult(passed=True)


def _finished(instance, result, status_sensor, alerts):
    run = instance.get_run_by_id(result.run_id)
    event = next(e for e in result.all_events if e.event_type_value in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE"))
    context = dg.build_run_status_sensor_context(
        sensor_name=status_sensor.name, dagster_instance=instance, dagster_run=run, dagster_event=event,
        resources={"alerts": alerts})
    return context.for_run_failure() if status_sensor is run_failure_alert else context


def test_every_failed_check_alerts_once_blocking_or_not(receiver):
    url, bodies = receiver
    alerts = AlertWebhook(url=url, ui_base_url="http://ui.example")
    with dg.instance_for_test() as instance:
        failed = dg.materialize([probe, probe_error, probe_warn, probe_ok], instance=instance, raise_on_error=False)
        assert not failed.success  # the blocking ERROR check fails the run
        check_failure_alert_on_failure(_finished(instance, failed, check_failure_alert_on_failure, alerts))
        assert sorted((b["check"], b["severity"]) for b in bodies) == [("probe_error", "ERROR"), ("probe_warn", "WARN")]
        error = next(b for b in bodies if b["check"] == "probe_error")
        assert error["asset"] == "probe" and error["metadata"] == {"auroc": 0.5, "threshold": 0.97}
        assert error["run_url"] == f"http://ui.example/runs/{failed.run_id}" and error["text"].startswith("halo check failed")
        assert error["blocks"][0]["type"] == "section"  # Slack's incoming-webhook layout

        bodies.clear()
        passed = dg.materialize([probe, probe_warn, probe_ok], instance=instance)
        assert passed.success  # a failed WARN check does not fail the run, and still alerts
        check_failure_alert_on_success(_finished(instance, passed, check_failure_alert_on_success, alerts))
        assert [(b["check"], b["severity"]) for b in bodies] == [("probe_warn", "WARN")]


def test_failed_run_alerts(receiver):
    url, bodies = receiver
    alerts = AlertWebhook(url=url)
    with dg.instance_for_test() as instance:
        failed = dg.materialize([probe, probe_error], instance=instance, raise_on_error=False)
        run_failure_alert(_finished(instance, failed, run_failure_alert, alerts))
    assert len(bodies) == 1 and bodies[0]["text"].startswith("halo run failed") and bodies[0]["run_id"] == failed.run_id


def test_new_data_requests_one_retrain_per_change(tmp_path):
    data = three_splits(tmp_path / "data", n=4)
    halo = HaloSettings(preset="smoke", overrides=[f"train_path={data}"], root_uri=str(tmp_path / "root"))
    with dg.instance_for_test() as instance:
        first = new_data_sensor(dg.build_sensor_context(instance=instance, resources={"halo": halo}))
        (request,) = first.run_requests
        assert request.tags["halo/files"] == "3" and request.partition_key == "smoke"  # the profile's own history
        assert first.dynamic_partitions_requests == [PROFILES.build_add_request(["smoke"])]
        ctx = dg.build_sensor_context(instance=instance, cursor=request.run_key.removeprefix("data-"),
                                      resources={"halo": halo})
        assert isinstance(new_data_sensor(ctx), dg.SkipReason)  # nothing changed
        three_splits(tmp_path / "more", n=4)
        (tmp_path / "more" / "train" / "part-00000.parquet").rename(data / "train" / "part-00001.parquet")
        later = new_data_sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor, resources={"halo": halo}))
        assert later.run_requests[0].run_key != request.run_key


def test_presets_and_the_deployment_profile_are_registered_once(tmp_path):
    halo = HaloSettings(preset="smoke", root_uri=str(tmp_path))
    with dg.instance_for_test() as instance:
        first = register_profiles(dg.build_sensor_context(instance=instance, resources={"halo": halo}))
        (add,) = first.dynamic_partitions_requests
        assert set(add.partition_keys) == set(preset_names()) and "smoke" in add.partition_keys
        instance.add_dynamic_partitions(PROFILES.name, add.partition_keys)  # what the daemon does with it
        again = register_profiles(dg.build_sensor_context(instance=instance, resources={"halo": halo}))
        assert isinstance(again, dg.SkipReason)


def test_weekly_schedule_registers_and_requests_the_code_locations_profile(tmp_path):
    from halo_assets.definitions import defs

    halo = HaloSettings(preset="demo", root_uri=str(tmp_path))
    schedule = defs.resolve_schedule_def("weekly_retrain")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, resources={"halo": halo},
                                            repository_def=defs.get_repository_def())
        (request,) = schedule.evaluate_tick(context).run_requests  # resolved against the job's partitions
        assert request.partition_key == "demo" and request.tags["dagster/partition"] == "demo"
        assert instance.get_dynamic_partitions(PROFILES.name) == ["demo"]


def test_new_data_sensor_skips_the_synthetic_default(tmp_path):
    halo = HaloSettings(preset="smoke", root_uri=str(tmp_path))
    with dg.instance_for_test() as instance:
        skip = new_data_sensor(dg.build_sensor_context(instance=instance, resources={"halo": halo}))
    assert isinstance(skip, dg.SkipReason) and "synthetic" in skip.skip_message


def test_scheduled_and_sensor_runs_carry_the_gpu_tags():
    """Schedule and sensor both launch retrain_job, whose run tags ask for a GPU."""
    from halo_assets.definitions import defs

    job = defs.resolve_job_def("retrain_job")
    assert "nvidia.com/gpu" in json.dumps(job.tags["dagster-k8s/config"])
    assert json.loads(job.tags["ecs/container_overrides"])["resourceRequirements"][0]["type"] == "GPU"
    assert defs.resolve_schedule_def("weekly_retrain").job_name == "retrain_job"
    assert defs.resolve_sensor_def("new_data_sensor").job_name == "retrain_job"
