"""deploy/: what can be checked here without Docker, Kubernetes or AWS."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PG_ENV = {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_USER": "u", "DAGSTER_PG_PASSWORD": "p", "DAGSTER_PG_DB": "d"}


@pytest.mark.parametrize("path", ["dagster.yaml", "dagster.local.yaml", "ecs/dagster.yaml"])
def test_instance_configs_match_dagsters_schema(path, tmp_path, monkeypatch):
    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    shutil.copy(DEPLOY / path, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises DagsterInvalidConfigError on a bad key
    assert config["python_logs"]["managed_python_loggers"] == ["halo_core"]


def test_production_instance_queues_runs_and_limits_the_gpu_pool():
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_retries"]["enabled"] and config["run_monitoring"]["enabled"]
    assert all(isinstance(v, dict) and "env" in v for k, v in config["storage"]["postgres"]["postgres_db"].items()
               if k != "port")  # credentials from the environment only


def test_compose_has_the_four_services_and_keeps_secrets_out():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    assert set(compose["services"]) == {"postgres", "halo_code", "webserver", "daemon"}
    assert compose["services"]["webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    text = (DEPLOY / "docker-compose.yaml").read_text()
    assert "POSTGRES_PASSWORD: ${DAGSTER_PG_PASSWORD:?" in text  # required from the environment, no default
    workspace = yaml.safe_load((DEPLOY / "workspace.compose.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["host"] == "halo_code"


def test_helm_values_launch_runs_on_kubernetes_with_the_halo_image():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "halo_assets.definitions"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"


def test_ecs_gpu_tags_are_json_the_launcher_can_parse():
    import json

    tags = yaml.safe_load((DEPLOY / "ecs" / "gpu_run_tags.yaml").read_text())
    overrides = json.loads(tags["ecs/container_overrides"])
    assert overrides["resourceRequirements"] == [{"type": "GPU", "value": "1"}]


def _configured_classes(path: Path, tmp_path: Path, monkeypatch) -> list:
    from dagster._core.instance.ref import InstanceRef

    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    shutil.copy(path, tmp_path / "dagster.yaml")
    ref = InstanceRef.from_dir(str(tmp_path))
    return [ref.storage_data, ref.run_coordinator_data, ref.run_launcher_data]


@pytest.mark.parametrize("path", ["dagster.yaml", "ecs/dagster.yaml"])
def test_every_class_the_production_instances_name_imports_and_accepts_its_config(path, tmp_path, monkeypatch):
    """What a container does first with DAGSTER_HOME: import each configured class (dagster_postgres,
    dagster_aws.ecs) and validate its config block, short of connecting to the database."""
    import importlib

    from dagster._config import process_config

    for data in _configured_classes(DEPLOY / path, tmp_path, monkeypatch):
        if data is None:
            continue
        klass = getattr(importlib.import_module(data.module_name), data.class_name)
        processed = process_config(klass.config_type(), data.config_dict)
        assert processed.success, (data.class_name, processed.errors)


def test_the_images_install_what_the_instance_loads_in_lock_step():
    import tomllib

    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    pins = dict(dep.split("==") for dep in [*project["dependencies"], *project["optional-dependencies"]["deploy"]]
                if "==" in dep)
    assert pins["dagster-postgres"] == pins["dagster-k8s"] == pins["dagster-aws"]
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        assert 'pip install --no-cache-dir ".[deploy]"' in (DEPLOY / dockerfile).read_text(), dockerfile


def test_helm_runs_each_step_in_its_own_pod_and_limits_the_gpu_pool():
    from halo_assets.assets import GPU_OP_TAGS, trained_model
    from halo_assets.jobs import executor_for, retrain_job_for
    from halo_assets.resources import HaloSettings

    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    env = {e["name"]: e["value"] for e in values["dagster-user-deployments"]["deployments"][0]["env"]}
    executor = executor_for(env["HALO_EXECUTOR"])
    assert executor.name == "k8s"
    # keys of the chart's Concurrency model (helm/dagster/schema/.../subschema/concurrency.py, extra="forbid")
    concurrency = values["concurrency"]
    assert set(concurrency) <= {"enabled", "pools", "runs"} and concurrency["enabled"]
    assert set(concurrency["pools"]) <= {"defaultLimit", "granularity", "opGranularityRunBuffer"}
    assert concurrency["pools"] == {"defaultLimit": 1, "granularity": "op"} and trained_model.op.pool == "gpu"
    # the run pod only orchestrates; the GPU request is on the training step alone, in a shape dagster-k8s accepts
    defs = dg.Definitions(assets=[trained_model], jobs=[retrain_job_for(executor)], resources={"halo": HaloSettings()})
    job = defs.resolve_job_def("retrain_job")
    assert job.executor_def is executor and "dagster-k8s/config" not in job.tags
    from dagster_k8s.job import get_user_defined_k8s_config

    step = get_user_defined_k8s_config(job.graph.node_named("trained_model").definition.tags)
    assert step.container_config["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert GPU_OP_TAGS["dagster-k8s/config"]["pod_spec_config"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_without_the_k8s_executor_the_whole_run_asks_for_the_gpu():
    from halo_assets.jobs import executor_for, retrain_job_for

    assert executor_for("default") is None
    with pytest.raises(ValueError, match="HALO_EXECUTOR"):
        executor_for("celery")
    assert "ecs/container_overrides" in retrain_job_for(None).tags  # compose / ECS: one container per run


def test_every_compose_service_that_loads_the_instance_gets_its_config_and_the_deploy_image():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    for name in ("halo_code", "webserver", "daemon"):
        service = compose["services"][name]
        home = service["environment"]["DAGSTER_HOME"]
        assert f"./dagster.yaml:{home}/dagster.yaml:ro" in service["volumes"], name
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name  # installs .[deploy]
        assert set(PG_ENV) <= set(service["environment"]), name
    assert compose["services"]["halo_code"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_kuberay_cluster_has_a_gpu_worker_group_on_the_pinned_ray():
    cluster = yaml.safe_load((DEPLOY / "kuberay" / "raycluster.yaml").read_text())
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    assert f'"ray[data]=={cluster["spec"]["rayVersion"]}"' in pyproject  # client and cluster on one Ray
    groups = {g["groupName"]: g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1" and groups["gpu"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    ports = {p["name"]: p["containerPort"] for p in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports["client"] == 10001  # HALO_RAY_ADDRESS=ray://halo-ray-head-svc:10001
