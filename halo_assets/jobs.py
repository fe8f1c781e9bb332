"""The retrain job, its weekly schedule, and the executor it runs under."""

from __future__ import annotations

import json

import dagster as dg

from halo_assets.assets import GPU_OP_TAGS
from halo_assets.resources import PROFILES, HaloSettings

# The EC2 capacity provider of GPU instances an ECS cluster runs halo's GPU runs on (deploy/ecs/): Fargate,
# where an ECS run lands by default, has no GPUs.
ECS_GPU_CAPACITY_PROVIDER = "halo-gpu"
# Run-level GPU requests, for launchers that put a whole run in one container (K8sRunLauncher without
# the k8s_job_executor, EcsRunLauncher): every retrain run, manual, scheduled or sensor-made, asks for a
# GPU. With the k8s_job_executor the trained_model op tags do the same per step.
GPU_RUN_TAGS = {
    **GPU_OP_TAGS,
    "ecs/run_task_kwargs": json.dumps(
        {"capacityProviderStrategy": [{"capacityProvider": ECS_GPU_CAPACITY_PROVIDER, "weight": 1, "base": 0}]}),
    "ecs/container_overrides": json.dumps({"resourceRequirements": [{"type": "GPU", "value": "1"}]}),
}
# What every step pod asks for under the k8s executor (trained_model's op tags add the GPU and more): without
# requests the scheduler packs step pods onto a node by nothing, and a filter on Ray or the gates starve.
STEP_K8S_CONFIG = {"container_config": {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}}}}

RETRAIN_JOB = "retrain_job"


def executor_for(name: str) -> dg.ExecutorDefinition | None:
    """HALO_EXECUTOR: "k8s" (the Helm chart) runs each step in its own pod, so only trained_model's pod
    asks for the GPU; anything else keeps Dagster's default (all steps in the run's container)."""
    if name == "k8s":
        from dagster_k8s import k8s_job_executor  # the `deploy` extra; only Kubernetes images need it

        return k8s_job_executor.configured({"step_k8s_config": STEP_K8S_CONFIG})
    if name in ("", "default"):
        return None
    raise ValueError(f"HALO_EXECUTOR={name!r}: want k8s or default")


def retrain_job_for(executor: dg.ExecutorDefinition | None):
    """Whole graph, checks included: a retrain re-reads the data, so every data check runs again. The
    brick-partitioned catalogue has its own job (survey.catalog_job), run per brick by its sensor. Under
    the k8s executor the run pod only orchestrates: a GPU request on it would hold a GPU for the run."""
    selection = dg.AssetSelection.all() - dg.AssetSelection.groups("catalog")
    return dg.define_asset_job(RETRAIN_JOB, selection=selection, executor_def=executor,
                               tags=None if executor else GPU_RUN_TAGS)


@dg.schedule(job_name=RETRAIN_JOB, cron_schedule="0 6 * * 1", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)  # switched on per deployment, not by a laptop demo
def weekly_retrain(context: dg.ScheduleEvaluationContext, halo: HaloSettings) -> dg.RunRequest:
    """Retrains the code location's profile. A schedule cannot return partition requests (a sensor
    can), so it registers its partition itself before asking for it."""
    profile = halo.profile()
    context.instance.add_dynamic_partitions(PROFILES.name, [profile])
    return dg.RunRequest(partition_key=profile, tags={"halo/trigger": "schedule"})
