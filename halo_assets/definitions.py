"""`defs`: the only place that assembles the Dagster Definitions of halo."""

import os

import dagster as dg

from halo_assets import assets, survey
from halo_assets.checks import CONFIG_REVIEW_CHECKS, DATA_CHECKS, GO_NO_GO_CHECKS, TRAINING_CHECKS
from halo_assets.jobs import retrain_job, weekly_retrain
from halo_assets.resources import halo_settings_for
from halo_assets.sensors import (
    AlertWebhook, check_failure_alert_on_failure, check_failure_alert_on_success, new_data_sensor, run_failure_alert,
)

# The webhook URL is a secret: read from the environment when the resource is built, never stored in
# config or metadata; without it alerts go to the log only.
ALERT_URL = dg.EnvVar("HALO_ALERT_WEBHOOK") if os.environ.get("HALO_ALERT_WEBHOOK") else ""

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets, survey]),
    asset_checks=[*DATA_CHECKS, *CONFIG_REVIEW_CHECKS, *TRAINING_CHECKS, *GO_NO_GO_CHECKS],
    jobs=[retrain_job, survey.catalog_job],
    schedules=[weekly_retrain],
    sensors=[new_data_sensor, survey.new_cutouts_sensor, check_failure_alert_on_success, check_failure_alert_on_failure, run_failure_alert],
    resources={"halo": halo_settings_for(os.environ.get("HALO_ENV", "local")), "alerts": AlertWebhook(url=ALERT_URL)},
)
