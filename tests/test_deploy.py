"""deploy/: what can be checked here without Docker, Kubernetes or AWS."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PG_ENV = {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_USER": "u", "DAGSTER_PG_PASSWORD": "p", "DAGSTER_PG_DB": "d"}
# what the ECS instance config reads from the daemon's environment besides the database
ECS_ENV = {"HALO_ECS_LOG_GROUP": "/halo/runs", "HALO_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::1:role/exec",
           "HALO_ECS_TASK_ROLE_ARN": "arn:aws:iam::1:role/task"}


@pytest.mark.parametrize("path", ["dagster.yaml", "dagster.local.yaml", "ecs/dagster.yaml"])
def test_instance_configs_match_dagsters_schema(path, tmp_path, monkeypatch):
    for key, value in {**PG_ENV, **ECS_ENV}.items():
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
    assert set(compose["services"]) == {"postgres", "halo_code", "webserver", "daemon", "files"}
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

    for key, value in {**PG_ENV, **ECS_ENV}.items():
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


# --- schemas available offline: Kubernetes' (the client's models), botocore's ECS shapes, the chart's
# models (their keys, as above), the images' pins. Not here: building images, a cluster, AWS.

def _k8s_problems(value, kind: str, where: str) -> list[str]:
    """``value`` against the Kubernetes API type ``kind`` (a model of the kubernetes client, e.g. V1Container,
    or "list[...]", "dict[str, ...]", "str"): unknown keys and wrong types, recursively. Keys may be the API's
    camelCase or the client's snake_case (dagster-k8s accepts both)."""
    import kubernetes.client.models as models

    if kind.startswith("list["):
        if not isinstance(value, list):
            return [f"{where}: a list expected"]
        return [p for i, v in enumerate(value) for p in _k8s_problems(v, kind[5:-1], f"{where}[{i}]")]
    if kind.startswith("dict["):
        if not isinstance(value, dict):
            return [f"{where}: a mapping expected"]
        inner = kind[5:-1].split(", ", 1)[1]
        return [p for k, v in value.items() for p in _k8s_problems(v, inner, f"{where}.{k}")]
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if kind in simple:
        return [] if isinstance(value, simple[kind]) and not (kind == "int" and isinstance(value, bool)) \
            else [f"{where}: {kind} expected, got {value!r}"]
    if kind == "object":
        return []
    model = getattr(models, kind)
    if not isinstance(value, dict):
        return [f"{where}: a {kind} mapping expected"]
    fields = {**{v: k for k, v in model.attribute_map.items()}, **{k: k for k in model.attribute_map}}
    problems = []
    for key, v in value.items():
        if key not in fields:
            problems.append(f"{where}.{key}: not a field of {kind}")
        else:
            problems += _k8s_problems(v, model.openapi_types[fields[key]], f"{where}.{key}")
    return problems


def test_the_checker_of_kubernetes_types_fails_on_a_wrong_key_or_type():
    assert _k8s_problems({"resources": {"requests": {"cpu": "1"}}}, "V1Container", "c") == []
    assert _k8s_problems({"resource": {}}, "V1Container", "c") == ["c.resource: not a field of V1Container"]
    assert _k8s_problems({"resources": {"requests": {"cpu": 1}}}, "V1Container", "c") == [
        "c.resources.requests.cpu: str expected, got 1"]


def _values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


# keys of the chart's models (helm/dagster/schema/schema/charts/: UserDeployment, PythonLogs; extra="forbid")
USER_DEPLOYMENT_KEYS = {
    "name", "image", "port", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "env",
    "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumeMounts",
    "volumes", "schedulerName"}
PYTHON_LOG_LEVELS = {"CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET"}


def test_helm_values_match_the_charts_and_kubernetes_schemas():
    values = _values()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert set(deployment) <= USER_DEPLOYMENT_KEYS
    problems = _k8s_problems(deployment["resources"], "V1ResourceRequirements", "deployment.resources")
    problems += _k8s_problems(deployment["env"], "list[V1EnvVar]", "deployment.env")
    run_pod = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    problems += _k8s_problems(run_pod["containerConfig"], "V1Container", "runK8sConfig.containerConfig")
    assert not problems, problems
    # the chart forwards pythonLogs to the instance's python_logs: without it no halo_core log line
    # (the trainer's epochs) reaches the UI on Kubernetes
    logs = values["pythonLogs"]
    assert set(logs) <= {"pythonLogLevel", "managedPythonLoggers", "dagsterHandlerConfig"}
    assert logs["managedPythonLoggers"] == ["halo_core"] and logs["pythonLogLevel"] in PYTHON_LOG_LEVELS


def test_every_step_pod_asks_for_cpu_and_memory_and_the_training_pod_for_a_gpu():
    """Each step's container as dagster-k8s's step handler builds it: the executor's step config merged
    with the op's `dagster-k8s/config` tag, then checked against the Kubernetes schema."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config

    from halo_assets.definitions import defs
    from halo_assets.jobs import STEP_K8S_CONFIG

    executor_context = K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(STEP_K8S_CONFIG))
    job = defs.resolve_job_def("retrain_job")
    containers = {}
    for node in job.graph.nodes:
        step = executor_context.merge(K8sContainerContext(
            run_k8s_config=get_user_defined_k8s_config(node.definition.tags)))
        containers[node.name] = step.run_k8s_config.container_config
    assert len(containers) >= 8
    for name, container in containers.items():
        assert not _k8s_problems(container, "V1Container", name), _k8s_problems(container, "V1Container", name)
        requests = container["resources"]["requests"]
        assert requests.get("cpu") and requests.get("memory"), name
    training = containers["trained_model"]["resources"]
    assert training["limits"] == {"nvidia.com/gpu": "1"} and float(training["requests"]["cpu"]) >= 4
    assert "nvidia.com/gpu" not in containers["filtered_dataset"]["resources"].get("limits", {})


def test_kuberay_pods_match_the_kubernetes_schema():
    cluster = yaml.safe_load((DEPLOY / "kuberay" / "raycluster.yaml").read_text())
    specs = {"head": cluster["spec"]["headGroupSpec"]["template"]["spec"],
             **{g["groupName"]: g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]}}
    problems = [p for name, spec in specs.items() for p in _k8s_problems(spec, "V1PodSpec", name)]
    assert not problems, problems
    for spec in specs.values():
        assert all(c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"] for c in spec["containers"])


def _ecs_model():
    import botocore.session

    return botocore.session.get_session().get_service_model("ecs")


def _run_task_problems(params: dict) -> str:
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(params, _ecs_model().operation_model("RunTask").input_shape)
    return report.generate_report() if report.has_errors() else ""


def test_the_ecs_run_tags_are_a_valid_run_task_call_on_the_gpu_capacity_provider():
    """What EcsRunLauncher sends for a retrain run: its `ecs/run_task_kwargs` merged into RunTask and the
    container overrides under `overrides`, checked against botocore's RunTask shape."""
    import json

    from halo_assets.jobs import ECS_GPU_CAPACITY_PROVIDER, GPU_RUN_TAGS

    example = yaml.safe_load((DEPLOY / "ecs" / "gpu_run_tags.yaml").read_text())
    for tags in (example, GPU_RUN_TAGS):
        kwargs = json.loads(tags["ecs/run_task_kwargs"])
        overrides = {"containerOverrides": [{"name": "run", **json.loads(tags["ecs/container_overrides"])}],
                     **json.loads(tags.get("ecs/task_overrides", "{}"))}
        params = {"cluster": "halo", "taskDefinition": "halo-run", **kwargs, "overrides": overrides}
        assert _run_task_problems(params) == ""
        assert [s["capacityProvider"] for s in kwargs["capacityProviderStrategy"]] == [ECS_GPU_CAPACITY_PROVIDER]
        assert overrides["containerOverrides"][0]["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert example["ecs/run_task_kwargs"] == GPU_RUN_TAGS["ecs/run_task_kwargs"]
    # the checker itself fails on a wrong shape
    assert "capacityProvider" in _run_task_problems({"taskDefinition": "t", "capacityProviderStrategy": [{"weight": 1}]})


def test_the_ecs_task_definition_can_be_placed_on_ec2():
    config = yaml.safe_load((DEPLOY / "ecs" / "dagster.yaml").read_text())["run_launcher"]["config"]
    compatibilities = set(_ecs_model().shape_for("Compatibility").enum)
    wanted = config["task_definition"]["requires_compatibilities"]
    assert "EC2" in wanted and set(wanted) <= compatibilities  # GPUs exist only on EC2 capacity


def test_every_deployment_serves_reports_at_a_url():
    """HALO_FILES_URL is set in each deployment, so report_html and the plots open from the UI: the
    compose `files` service, and on S3 the bucket's URL of HALO_ROOT itself."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    env = compose["services"]["halo_code"]["environment"]
    assert env["HALO_FILES_URL"] == "${HALO_FILES_URL:-http://127.0.0.1:3001}"
    files = compose["services"]["files"]
    assert files["ports"] == ["127.0.0.1:3001:3001"] and "halo_data:/data/halo:ro" in files["volumes"]
    assert "/data/halo" in files["command"] and env["HALO_ROOT"] == "${HALO_ROOT:-/data/halo}"
    helm = {e["name"]: e["value"] for e in _values()["dagster-user-deployments"]["deployments"][0]["env"]}
    ecs = dict(v.split("=", 1) for v in yaml.safe_load((DEPLOY / "ecs" / "dagster.yaml").read_text())
               ["run_launcher"]["config"]["env_vars"])
    for name, deployment in (("helm", helm), ("ecs", ecs)):
        bucket, _, prefix = deployment["HALO_ROOT"].removeprefix("s3://").partition("/")
        region = deployment["AWS_REGION"] if "AWS_REGION" in deployment else helm["AWS_REGION"]
        assert deployment["HALO_FILES_URL"] == f"https://{bucket}.s3.{region}.amazonaws.com/{prefix}", name


def _from_lines(dockerfile: str) -> list[str]:
    return [line.split()[1] for line in (DEPLOY / dockerfile).read_text().splitlines() if line.startswith("FROM ")]


def test_images_and_charts_are_pinned():
    import re
    import tomllib

    from halo_core import __version__

    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        for image in _from_lines(dockerfile):
            assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), (dockerfile, image)  # the interpreter halo pins
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    for name, service in compose["services"].items():
        assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)+", service["image"]), (name, service["image"])
        if "build" in service:
            assert service["image"] == f"halo:{__version__}", name
    deployment = _values()["dagster-user-deployments"]["deployments"][0]
    assert deployment["image"]["tag"] == __version__
    cluster = (DEPLOY / "kuberay" / "raycluster.yaml").read_text()
    assert set(re.findall(r"image: (\S+)", cluster)) == {f"REGISTRY/halo-cuda:{__version__}"}
    dagster = dict(d.split("==") for d in tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
                   ["project"]["dependencies"] if d.startswith("dagster=="))["dagster"]
    assert f"dagster/dagster --version {dagster} " in (DEPLOY / "helm" / "values.yaml").read_text()
    assert "kuberay/kuberay-operator --version " in cluster


def test_the_cpu_image_installs_the_cpu_torch_and_the_cuda_image_the_pypi_build():
    import tomllib

    pins = dict(d.split("==") for d in tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
                ["project"]["dependencies"] if d.startswith(("torch==", "torchvision==")))
    cpu = (DEPLOY / "Dockerfile").read_text()
    line = next(x for x in cpu.splitlines() if "download.pytorch.org/whl/cpu" in x)
    assert f"torch=={pins['torch']}" in line and f"torchvision=={pins['torchvision']}" in line
    assert cpu.index("whl/cpu") < cpu.index('".[deploy]"')  # before anything could pull the CUDA wheel
    cuda = (DEPLOY / "Dockerfile.cuda").read_text()
    assert "whl/cpu" not in cuda and "NVIDIA_VISIBLE_DEVICES=all" in cuda


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a pattern matches a path or a folder above it."""
    import fnmatch

    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if glob.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, glob[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(c, glob) and c.count("/") == glob.count("/") for c in candidates)
        if hit:
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_images_copy_and_nothing_else():
    root = DEPLOY.parent
    patterns = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = {src for dockerfile in ("Dockerfile", "Dockerfile.cuda")
              for line in (DEPLOY / dockerfile).read_text().splitlines() if line.startswith("COPY ")
              for src in line.split()[1:-1]}
    assert copied == {"pyproject.toml", "README.md", "halo_core", "halo_assets", "workspace.yaml"}
    for src in copied:
        assert not _dockerignored(src, patterns), src
    assert not _dockerignored("halo_core/presets/demo.yaml", patterns)
    for heavy in (".venv/lib/x.so", "halo_data/demo/x.npy", ".dagster_home/history/runs.db", ".git/objects/ab",
                  "tests/conftest.py", "halo_core/__pycache__/config.cpython-311.pyc", "benchmarks/survey.py"):
        assert _dockerignored(heavy, patterns), heavy
