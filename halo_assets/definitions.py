"""`defs`: the only place that assembles the Dagster Definitions of halo."""

from __future__ import annotations

import dagster as dg

from halo_assets import assets
from halo_assets.checks import DATA_CHECKS, GO_NO_GO_CHECKS, TRAINING_CHECKS
from halo_assets.jobs import retrain_job, weekly_retrain
from halo_assets.resources import HaloSettings

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=[*DATA_CHECKS, *TRAINING_CHECKS, *GO_NO_GO_CHECKS],
    jobs=[retrain_job],
    schedules=[weekly_retrain],
    resources={"halo": HaloSettings()},
)
