"""The retrain job and its weekly schedule."""

from __future__ import annotations

import dagster as dg

# Whole graph, checks included: a retrain re-reads the data, so every data check runs again.
retrain_job = dg.define_asset_job("retrain_job", selection=dg.AssetSelection.all())

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain", job=retrain_job, cron_schedule="0 6 * * 1", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,  # switched on per deployment, not by a laptop demo
)
