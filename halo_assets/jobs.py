"""The retrain job and its weekly schedule."""

from __future__ import annotations

import json

import dagster as dg

from halo_assets.assets import GPU_OP_TAGS

# Run-level GPU requests, for launchers that put a whole run in one container (K8sRunLauncher without
# the k8s_job_executor, EcsRunLauncher): every retrain run, manual, scheduled or sensor-made, asks for a
# GPU. With the k8s_job_executor the trained_model op tags do the same per step.
GPU_RUN_TAGS = {
    **GPU_OP_TAGS,
    "ecs/container_overrides": json.dumps({"resourceRequirements": [{"type": "GPU", "value": "1"}]}),
}

# Whole graph, checks included: a retrain re-reads the data, so every data check runs again. The
# brick-partitioned catalogue has its own job (survey.catalog_job), run per brick by its sensor.
retrain_job = dg.define_asset_job("retrain_job", selection=dg.AssetSelection.all() - dg.AssetSelection.assets(
    "candidate_catalog"), tags=GPU_RUN_TAGS)

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain", job=retrain_job, cron_schedule="0 6 * * 1", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,  # switched on per deployment, not by a laptop demo
)
