"""Sensors evaluated with Dagster's test contexts over a real instance; alerts go to a real HTTP
receiver on 127.0.0.1."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from halo_assets.resources import PROFILES, HaloSettings
from halo_assets.sensors import AlertWebhook, halo_alerts, new_data_sensor, register_profiles
from halo_core.config import preset_names
from tests.factories import free_port, three_splits


class Receiver:
    """A webhook on 127.0.0.1 that records every JSON body posted to it; it answers 503 to the first
    ``refuse`` posts, and is down (nothing listens) until ``start``."""

    def __init__(self, refuse: int = 0):
        self.port, self.bodies, self.refuse, self.server = free_port(), [], refuse, None
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def start(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.refuse > 0:
                    receiver.refuse -= 1
                    self.send_response(503)
                else:
                    receiver.bodies.append(body)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


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


def _tick(instance, alerts, cursor=None):
    """One evaluation of the alert sensor; returns its new cursor."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": alerts})
    halo_alerts(context)
    return context.cursor


def test_every_failed_check_and_failed_run_alerts_once_blocking_or_not(receiver):
    alerts = AlertWebhook(url=receiver.url, ui_base_url="http://ui.example")
    with dg.instance_for_test() as instance:
        failed = dg.materialize([probe, probe_error, probe_warn, probe_ok], instance=instance, raise_on_error=False)
        assert not failed.success  # the blocking ERROR check fails the run
        cursor = _tick(instance, alerts)
        bodies = receiver.bodies
        assert sorted((b.get("check", ""), b.get("severity", "")) for b in bodies) == [
            ("", ""), ("probe_error", "ERROR"), ("probe_warn", "WARN")]
        error = next(b for b in bodies if b.get("check") == "probe_error")
        assert error["asset"] == "probe" and error["metadata"] == {"auroc": 0.5, "threshold": 0.97}
        assert error["run_url"] == f"http://ui.example/runs/{failed.run_id}" and error["text"].startswith("halo check failed")
        assert error["blocks"][0]["type"] == "section"  # Slack's incoming-webhook layout
        run = next(b for b in bodies if "check" not in b)
        assert run["text"].startswith("halo run failed") and run["dedupe_key"] == f"{failed.run_id}:run_failure"

        bodies.clear()
        passed = dg.materialize([probe, probe_warn, probe_ok], instance=instance)
        assert passed.success  # a failed WARN check does not fail the run, and still alerts
        cursor = _tick(instance, alerts, cursor)
        assert [(b["check"], b["severity"]) for b in bodies] == [("probe_warn", "WARN")]
        _tick(instance, alerts, cursor)
        assert len(bodies) == 1  # nothing new: nothing posted again


def test_alerts_wait_in_the_outbox_while_the_webhook_is_down_and_arrive_once_it_is_up(caplog, capsys):
    down = Receiver(refuse=1)  # nothing listens yet; once up, it first answers 503 once
    alerts = AlertWebhook(url=down.url, attempts=2, backoff_s=0.01)
    try:
        with dg.instance_for_test() as instance:
            failed = dg.materialize([probe, probe_error, probe_warn], instance=instance, raise_on_error=False)
            capsys.readouterr()
            with caplog.at_level(logging.WARNING):
                cursor = _tick(instance, alerts)  # no exception although every post fails
            logged = caplog.text + capsys.readouterr().err  # the sensor's own log, and the webhook's attempts
            assert "probe_error" in logged and "probe_warn" in logged and "halo run failed" in logged
            assert down.url not in logged and str(down.port) not in logged  # the webhook URL is a secret
            waiting = json.loads(cursor)["outbox"]
            assert len(waiting) == 3 and len({a["dedupe_key"] for a in waiting}) == 3

            down.start()
            cursor = _tick(instance, alerts, cursor)  # the 503 is retried within the tick
            assert json.loads(cursor)["outbox"] == []
            assert sorted(b["dedupe_key"] for b in down.bodies) == sorted(a["dedupe_key"] for a in waiting)
            assert all(b["run_id"] == failed.run_id for b in down.bodies)
            _tick(instance, alerts, cursor)
            assert len(down.bodies) == 3  # delivered once each
    finally:
        down.stop()


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


def test_new_grades_request_a_retrain_on_the_synthetic_data_too(tmp_path):
    grades = tmp_path / "grades.parquet"
    halo = HaloSettings(preset="smoke", overrides=[f"graded_negatives_path={grades}"], root_uri=str(tmp_path / "root"))
    with dg.instance_for_test() as instance:
        assert isinstance(new_data_sensor(dg.build_sensor_context(instance=instance, resources={"halo": halo})),
                          dg.SkipReason)  # no grades file yet
        grades.write_bytes(b"first grades")
        first = new_data_sensor(dg.build_sensor_context(instance=instance, resources={"halo": halo}))
        (request,) = first.run_requests
        assert request.tags["halo/files"] == "1"
        cursor = request.run_key.removeprefix("data-")
        grades.write_bytes(b"more grades, merged")
        later = new_data_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"halo": halo}))
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


class Trickler:
    """A webhook on 127.0.0.1 that takes a post and then sends its reply one byte every ``interval``
    seconds: each socket read succeeds within any timeout, so only a total deadline stops it (M4)."""

    def __init__(self, interval: float = 0.05):
        import socket

        self.interval, self.stopped = interval, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection):
        import time

        with connection:
            connection.recv(65536)
            reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
            for i in range(len(reply)):
                if self.stopped.is_set():
                    return
                try:
                    connection.sendall(reply[i:i + 1])
                except OSError:
                    return
                time.sleep(self.interval)

    def stop(self):
        self.stopped.set()
        self.listener.close()


def test_a_post_to_a_trickling_webhook_stops_at_its_total_deadline():
    import time

    from halo_assets.sensors import post_json

    trickler = Trickler()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no complete reply within 0.5 s"):
            post_json(trickler.url, b"{}", 0.5)
        assert time.monotonic() - started < 1.5
    finally:
        trickler.stop()


def test_a_tick_stops_posting_within_its_budget_and_the_next_one_continues(receiver):
    """The daemon kills a tick after 60 s and then saves no cursor; a trickling webhook once stalled
    every tick past that, so nothing was ever delivered."""
    import time

    trickler = Trickler()
    try:
        with dg.instance_for_test() as instance:
            dg.materialize([probe, probe_error, probe_warn], instance=instance, raise_on_error=False)
            slow = AlertWebhook(url=trickler.url, timeout_s=0.4, attempts=2, backoff_s=0.0, tick_budget_s=1.0)
            started = time.monotonic()
            cursor = _tick(instance, slow)
            assert time.monotonic() - started < 1.0 + 0.4 + 1.0  # the budget, one post's deadline, slack
            waiting = json.loads(cursor)["outbox"]
            assert len(waiting) == 3 and receiver.bodies == []
            cursor = _tick(instance, AlertWebhook(url=receiver.url), cursor)  # the next tick continues
            assert json.loads(cursor)["outbox"] == []
            assert sorted(b["dedupe_key"] for b in receiver.bodies) == sorted(a["dedupe_key"] for a in waiting)
    finally:
        trickler.stop()
