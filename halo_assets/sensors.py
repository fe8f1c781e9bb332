"""Sensors: a retrain when new data lands, the presets registered as profiles, and an alert for every
failed check and failed run that survives a webhook that is down."""

import contextlib
import hashlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

import dagster as dg
from pydantic import Field

from halo_assets.jobs import RETRAIN_JOB
from halo_assets.resources import PROFILES, HaloSettings
from halo_core import uris
from halo_core.config import preset_names

log = logging.getLogger(__name__)

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
RUNS_PER_TICK = 50
OUTBOX_LIMIT = 200  # undelivered alerts kept in the cursor; beyond that the oldest are dropped, and logged
FIRST_LOOKBACK = timedelta(days=1)  # a fresh sensor alerts for runs of the last day, not the whole history


class AlertWebhook(dg.ConfigurableResource):
    """Where alerts go: a Slack-compatible incoming-webhook URL (empty: the log only)."""

    url: str = Field("", description="incoming webhook URL; set it from the environment (HALO_ALERT_WEBHOOK)")
    ui_base_url: str = Field("http://127.0.0.1:3000", description="Dagster UI address, for run links")
    timeout_s: float = Field(10.0, gt=0, description="total deadline of one post: connect, send and read together")
    attempts: int = Field(3, ge=1, description="posts per alert and tick before it waits for the next tick")
    backoff_s: float = Field(1.0, ge=0, description="wait before the 2nd attempt, doubled for each further one")
    # the daemon kills a sensor tick after 60 s, and a killed tick's cursor is never saved: posting stops
    # when this much of the tick is spent, and the cursor (with what is still waiting) is returned
    tick_budget_s: float = Field(40.0, gt=0, lt=60, description="seconds of a tick the webhook may take")

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"

    def deliver(self, payload: dict, deadline: float | None = None) -> bool:
        """Posts ``payload`` with retries and backoff, all before ``deadline`` (time.monotonic()); False
        (never an exception) when the webhook did not take it in time. The URL is a secret: it appears
        in no log line."""
        if not self.url:
            return True
        body = json.dumps(payload).encode()
        deadline = deadline if deadline is not None else time.monotonic() + self.attempts * self.timeout_s
        for attempt in range(self.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                post_json(self.url, body, min(self.timeout_s, remaining))
                return True
            except (OSError, http.client.HTTPException) as err:  # refused, timed out, cut off, HTTP >= 400
                log.warning("alert %s: webhook attempt %d of %d failed: %s", payload["dedupe_key"], attempt + 1,
                            self.attempts, getattr(err, "reason", None) or type(err).__name__)
                if attempt + 1 < self.attempts:
                    time.sleep(max(0.0, min(self.backoff_s * 2 ** attempt, deadline - time.monotonic())))
        return False


def post_json(url: str, body: bytes, deadline_s: float) -> None:
    """POST ``body`` to ``url``, all of it (connect, send, read the reply) within ``deadline_s``: a socket
    timeout bounds each read, not their sum, so a server that trickles its reply one byte at a time is
    cut off by a timer that shuts the socket down. OSError on an HTTP error status or when cut off."""
    parts = urllib.parse.urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=deadline_s)
    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        if connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(deadline_s, cut_off)
    timer.start()
    try:
        connection.request("POST", parts.path or "/", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status >= 400:
            raise OSError(f"HTTP {response.status}")
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError(f"no complete reply within {deadline_s:.1f} s") from None
        raise
    finally:
        timer.cancel()
        connection.close()


def check_alert_payload(evaluation: dg.AssetCheckEvaluation, run_id: str, run_url: str, dedupe_key: str) -> dict:
    """Slack's incoming-webhook shape: a text fallback plus a section with the facts."""
    asset = evaluation.asset_key.to_user_string()
    severity = evaluation.severity.value
    metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    scalars = {k: v for k, v in metadata.items() if isinstance(v, (int, float, str, bool)) and len(str(v)) < 80}
    text = f"halo check failed: {asset}.{evaluation.check_name} ({severity}) in run {run_id[:8]}"
    facts = "\n".join(f"*{k}*: {v}" for k, v in list(scalars.items())[:8])
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"{text}\n{facts}\n<{run_url}|open the run>"}}],
        "asset": asset, "check": evaluation.check_name, "severity": severity, "run_id": run_id,
        "run_url": run_url, "metadata": scalars, "dedupe_key": dedupe_key,
    }


def run_alerts(instance: dg.DagsterInstance, run: dg.DagsterRun, alerts: AlertWebhook) -> list[dict]:
    """One alert per failed check evaluation of a finished run (blocking or not, ERROR or WARN), keyed
    by the evaluation's event id, plus one for the run itself when it failed."""
    url = alerts.run_url(run.run_id)
    found = []
    for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            found.append(check_alert_payload(evaluation, run.run_id, url, f"{run.run_id}:{record.storage_id}"))
    if run.status == dg.DagsterRunStatus.FAILURE:
        failures = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        reason = failures[-1].event_log_entry.message if failures else "no failure event"
        text = f"halo run failed: {run.job_name} run {run.run_id[:8]}: {reason}"
        found.append({"text": text, "run_id": run.run_id, "run_url": url, "dedupe_key": f"{run.run_id}:run_failure",
                      "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"{text}\n<{url}|open the run>"}}]})
    return found


# A plain sensor, not run-status sensors: its cursor holds both its place in the run history and the
# outbox of alerts the webhook has not taken yet, so a webhook that is down delays alerts, never loses them.
@dg.sensor(name="halo_alerts", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def halo_alerts(context: dg.SensorEvaluationContext, alerts: AlertWebhook) -> dg.SkipReason:
    """Logs every failed check and failed run as soon as its run finishes, then posts it to the webhook
    (at least once: each post carries a `dedupe_key`, the check evaluation's id, for the receiver to drop
    repeats); what the webhook refused is posted again on the next ticks."""
    deadline = time.monotonic() + alerts.tick_budget_s
    state = json.loads(context.cursor) if context.cursor else {}
    after = datetime.fromisoformat(state["after"]) if "after" in state else datetime.now(timezone.utc) - FIRST_LOOKBACK
    boundary, outbox = set(state.get("boundary", [])), list(state.get("outbox", []))
    records = context.instance.get_run_records(
        dg.RunsFilter(statuses=FINISHED, updated_after=after - timedelta(microseconds=1)),
        limit=RUNS_PER_TICK, order_by="update_timestamp", ascending=True)
    for record in records:
        if record.dagster_run.run_id in boundary:
            continue  # seen on the previous tick: the filter includes the last timestamp on purpose
        for alert in run_alerts(context.instance, record.dagster_run, alerts):
            context.log.warning("halo alert %s: %s", alert["dedupe_key"], alert["text"])
            outbox.append(alert)
    if records:
        last = records[-1].update_timestamp
        boundary = {r.dagster_run.run_id for r in records if r.update_timestamp == last} | (
            boundary if last == after else set())
        after = last
    if len(outbox) > OUTBOX_LIMIT:
        dropped = outbox[:-OUTBOX_LIMIT]
        context.log.error("halo alerts: webhook down too long, %d alerts dropped (logged above): %s",
                          len(dropped), [a["dedupe_key"] for a in dropped])
        outbox = outbox[-OUTBOX_LIMIT:]
    delivered = 0
    # in order; after one refusal, or once the tick's budget is spent, the rest wait for the next tick
    while outbox and time.monotonic() < deadline and alerts.deliver(outbox[0], deadline):
        outbox.pop(0)
        delivered += 1
    context.update_cursor(json.dumps({"after": after.isoformat(), "boundary": sorted(boundary), "outbox": outbox}))
    return dg.SkipReason(f"{delivered} alerts delivered, {len(outbox)} waiting for the webhook")


@dg.sensor(job_name=RETRAIN_JOB, minimum_interval_seconds=300)
def new_data_sensor(context: dg.SensorEvaluationContext, halo: HaloSettings):
    """Requests a retrain of the code location's profile when parquet files under `train_path` (and
    `val_path`, `test_path` when set) or the grades file `graded_negatives_path` are added, removed or
    changed (registering the profile's partition if it is new). The cursor is a fingerprint of (path,
    size, mtime) of every file, and it doubles as the run key, so the same data never starts two runs."""
    cfg = halo.config()
    if not cfg.train_path and not cfg.graded_negatives_path:
        return dg.SkipReason("train_path and graded_negatives_path are empty: the graph uses the embedded "
                             "synthetic dataset")
    files = [f for root in dict.fromkeys((cfg.split_paths or {"train": cfg.train_path}).values()) if root
             for f in uris.find(root, ".parquet")]
    if cfg.graded_negatives_path and uris.exists(cfg.graded_negatives_path):
        files.append(cfg.graded_negatives_path)  # new grades: new training negatives
    if not files:
        return dg.SkipReason(f"{cfg.train_path or cfg.graded_negatives_path}: no files yet")
    fingerprint = hashlib.sha256(json.dumps([uris.file_state(f) for f in files]).encode()).hexdigest()[:16]
    if fingerprint == context.cursor:
        return dg.SkipReason(f"no change in {len(files)} files")
    context.update_cursor(fingerprint)
    profile = halo.profile()
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"data-{fingerprint}", partition_key=profile,
                                    tags={"halo/trigger": "new_data", "halo/files": str(len(files))})],
        dynamic_partitions_requests=[PROFILES.build_add_request([profile])])


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def register_profiles(context: dg.SensorEvaluationContext, halo: HaloSettings):
    """Every preset and the code location's own profile are partitions, so the UI offers them in its
    partition picker; a user's config file adds its profile when it first runs."""
    known = set(context.instance.get_dynamic_partitions(PROFILES.name))
    missing = sorted({*preset_names(), halo.profile()} - known)
    if not missing:
        return dg.SkipReason(f"all {len(known)} profiles registered")
    return dg.SensorResult(dynamic_partitions_requests=[PROFILES.build_add_request(missing)])
