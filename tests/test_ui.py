"""The UI path a user takes: `dagster dev` on 127.0.0.1, retrain_job launched through the GraphQL
API, run to success, and the asset checks' results read back."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from tests.factories import free_port

ROOT = Path(__file__).resolve().parents[1]
CHECKS_QUERY = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } }
  }
}"""
# the UI's "Add partition" button; the register_profiles sensor may have added it first
ADD_PROFILE = """
mutation($repo: RepositorySelector!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: "profile", partitionKey: $key) { __typename }
}"""
REPO = {"repositoryLocationName": "halo_assets.definitions", "repositoryName": "__repository__"}


@pytest.fixture
def dagster_dev(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "HALO_ROOT": str(tmp_path / "halo_data")}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
                             "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        else:
            pytest.fail("dagster dev did not answer within 120 s")
        yield port, home, tmp_path / "halo_data"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a daemon mid-tick can outlast a graceful stop on a loaded machine
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_launch_retrain_through_graphql_and_read_checks(dagster_dev):
    port, home, root = dagster_dev
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    run_config = {"resources": {"halo": {"config": {"preset": "smoke", "root_uri": str(root), "overrides": []}}},
                  # one process for all steps: a process per step costs ~10 s of imports each on 2 cores
                  "execution": {"config": {"in_process": {}}}}
    added = requests.post(f"http://127.0.0.1:{port}/graphql", timeout=30, json={
        "query": ADD_PROFILE, "variables": {"repo": REPO, "key": "smoke"}}).json()["data"]["addDynamicPartition"]
    assert added["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"), added
    run_id = client.submit_job_execution("retrain_job", run_config=run_config, tags={"dagster/partition": "smoke"})
    deadline = time.time() + 300
    while (status := client.get_run_status(run_id)) not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
        assert time.time() < deadline, f"run {run_id} still {status} after 300 s"
        time.sleep(2)
    reply = requests.post(f"http://127.0.0.1:{port}/graphql", timeout=30, json={
        "query": CHECKS_QUERY, "variables": {"key": {"path": ["filtered_dataset"]}}}).json()
    checks = {c["name"]: c["executionForLatestMaterialization"]["status"]
              for c in reply["data"]["assetNodeOrError"]["assetChecksOrError"]["checks"]}
    assert checks["split_integrity"] == "SUCCEEDED" and checks["excluded_bricks_absent"] == "SUCCEEDED"
    assert (root / "smoke" / "evaluation_report" / "report.json").exists()  # the run got through evaluation
