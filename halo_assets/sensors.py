"""Sensors: a retrain when new data lands, and an alert for every failed check and failed run."""

import hashlib
import json
import logging
import urllib.request

import dagster as dg
from pydantic import Field

from halo_assets.jobs import retrain_job
from halo_assets.resources import HaloSettings
from halo_core import uris

log = logging.getLogger(__name__)


class AlertWebhook(dg.ConfigurableResource):
    """Where alerts go: a Slack-compatible incoming-webhook URL (empty: the log only)."""

    url: str = Field("", description="incoming webhook URL; set it from the environment (HALO_ALERT_WEBHOOK)")
    ui_base_url: str = Field("http://127.0.0.1:3000", description="Dagster UI address, for run links")
    timeout_s: float = 10.0

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"

    def post(self, payload: dict) -> None:
        log.warning("halo alert: %s", payload["text"])
        if not self.url:
            return
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()


def check_alert_payload(evaluation: dg.AssetCheckEvaluation, run_id: str, run_url: str) -> dict:
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
        "run_url": run_url, "metadata": scalars,
    }


def alert_failed_checks(context: dg.RunStatusSensorContext, alerts: AlertWebhook) -> int:
    """Posts one alert per failed check evaluation of the finished run; returns how many."""
    run_id = context.dagster_run.run_id
    sent = 0
    for entry in context.instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if not evaluation.passed:
            alerts.post(check_alert_payload(evaluation, run_id, alerts.run_url(run_id)))
            sent += 1
    return sent


# Every run ends in SUCCESS (a failed WARN or non-blocking check does not fail it) or FAILURE (a failed
# blocking check does): one sensor per status sees each finished run exactly once, Dagster keeps the cursor.
@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="check_failure_alert_on_success",
                      default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=True)
def check_failure_alert_on_success(context: dg.RunStatusSensorContext, alerts: AlertWebhook) -> None:
    """Alerts for failed (non-blocking or WARN) checks of runs that succeeded."""
    alert_failed_checks(context, alerts)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.FAILURE, name="check_failure_alert_on_failure",
                      default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=True)
def check_failure_alert_on_failure(context: dg.RunStatusSensorContext, alerts: AlertWebhook) -> None:
    """Alerts for failed checks of runs that failed (a failed blocking check fails its run)."""
    alert_failed_checks(context, alerts)


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=True)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertWebhook) -> None:
    """Posts an alert for every failed run (a crashed step, not a failed check, is the usual cause)."""
    run_id = context.dagster_run.run_id
    text = f"halo run failed: {context.dagster_run.job_name} run {run_id[:8]}: {context.failure_event.message}"
    alerts.post({"text": text, "run_id": run_id, "run_url": alerts.run_url(run_id),
                 "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"{text}\n<{alerts.run_url(run_id)}|open the run>"}}]})


@dg.sensor(job=retrain_job, minimum_interval_seconds=300)
def new_data_sensor(context: dg.SensorEvaluationContext, halo: HaloSettings):
    """Requests a retrain when parquet files under `train_path` (and `val_path`, `test_path` when set)
    are added, removed or changed. The cursor is a fingerprint of (path, size, mtime) of every file,
    and it doubles as the run key, so the same data never starts two runs."""
    cfg = halo.config()
    if not cfg.train_path:
        return dg.SkipReason("train_path is empty: the graph uses the embedded synthetic dataset")
    files = [f for root in dict.fromkeys((cfg.split_paths or {"train": cfg.train_path}).values())
             for f in uris.find(root, ".parquet")]
    if not files:
        return dg.SkipReason(f"{cfg.train_path}: no parquet files yet")
    fingerprint = hashlib.sha256(json.dumps([uris.file_state(f) for f in files]).encode()).hexdigest()[:16]
    if fingerprint == context.cursor:
        return dg.SkipReason(f"no change in {len(files)} files")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=f"data-{fingerprint}", tags={"halo/trigger": "new_data", "halo/files": str(len(files))})
