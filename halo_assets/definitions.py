"""`defs`: the only place that assembles the Dagster Definitions of halo."""

import os

import dagster as dg

from halo_assets import assets, real_data, survey
from halo_assets.checks import CONFIG_REVIEW_CHECKS, DATA_CHECKS, GO_NO_GO_CHECKS, TRAINING_CHECKS
from halo_assets.console import verdict_console_logger
from halo_assets.jobs import executor_for, retrain_job_for, weekly_retrain
from halo_assets.real_data import REAL_DATA_CHECKS
from halo_assets.resources import DEPLOYMENT
from halo_assets.sensors import AlertWebhook, halo_alerts, new_data_sensor, register_profiles

# The webhook URL is a secret: read from the environment when the resource is built, never stored in
# config or metadata; without it alerts go to the log only.
ALERT_URL = dg.EnvVar("HALO_ALERT_WEBHOOK") if os.environ.get("HALO_ALERT_WEBHOOK") else ""
# Set here, not only on retrain_job, so the UI's "Materialize" (an implicit asset job) runs the same way.
EXECUTOR = executor_for(os.environ.get("HALO_EXECUTOR", "default"))

defs = dg.Definitions(
    assets=assets.versioned(dg.load_assets_from_modules([assets, real_data, survey]), DEPLOYMENT.config()),
    asset_checks=[*DATA_CHECKS, *CONFIG_REVIEW_CHECKS, *TRAINING_CHECKS, *GO_NO_GO_CHECKS, *REAL_DATA_CHECKS],
    jobs=[retrain_job_for(EXECUTOR), survey.catalog_job],
    schedules=[weekly_retrain],
    sensors=[new_data_sensor, register_profiles, halo_alerts, survey.new_cutouts_sensor],
    resources={"halo": DEPLOYMENT, "alerts": AlertWebhook(url=ALERT_URL)},
    # runs that configure `loggers: {console: ...}` (python -m halo_assets.demo does) print a failed blocking
    # check as a NO-GO line, not a stack trace; others get Dagster's default console logger
    loggers={"console": verdict_console_logger},
    executor=EXECUTOR,
)
