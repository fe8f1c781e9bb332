"""deploy/: what can be checked here without Docker, Kubernetes or AWS."""

import shutil
from pathlib import Path

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
