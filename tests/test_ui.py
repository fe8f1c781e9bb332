"""The UI path a user takes: `dagster dev` on 127.0.0.1 with the artifact folder served beside it
(as `make ui` does), retrain_job launched through the GraphQL API, run to success, the asset checks'
results read back, and the evaluation_report asset page rendered by headless Chromium."""

import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from halo_core.evaluation.report import KEY_PLOTS
from tests.browser import rendered_dom, webdriver
from tests.factories import free_port

ROOT = Path(__file__).resolve().parents[1]
CHECKS_QUERY = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name description executionForLatestMaterialization { status } } } } }
  }
}"""
# the UI's "Add partition" button; the register_profiles sensor may have added it first
ADD_PROFILE = """
mutation($repo: RepositorySelector!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: "profile", partitionKey: $key) { __typename }
}"""
REPO = {"repositoryLocationName": "halo_assets.definitions", "repositoryName": "__repository__"}


class _Files(http.server.SimpleHTTPRequestHandler):
    """Read-only file server (GET/HEAD only, like `python -m http.server`) that remembers what was fetched."""

    fetched: list[str] = []

    def log_message(self, *args):
        _Files.fetched.append(self.path)


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ui")
    home = tmp_path / "dagster_home"
    home.mkdir()
    root = tmp_path / "halo_data"
    root.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Files, directory=str(root)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "HALO_ROOT": str(root),
           "HALO_FILES_URL": f"http://127.0.0.1:{files.server_port}"}
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
        yield port, home, root
    finally:
        files.shutdown()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a daemon mid-tick can outlast a graceful stop on a loaded machine
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def finished_run(dagster_dev):
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
    return port, root


def test_launch_retrain_through_graphql_and_read_checks(finished_run):
    port, root = finished_run
    reply = requests.post(f"http://127.0.0.1:{port}/graphql", timeout=30, json={
        "query": CHECKS_QUERY, "variables": {"key": {"path": ["filtered_dataset"]}}}).json()
    checks = {c["name"]: c["executionForLatestMaterialization"]["status"]
              for c in reply["data"]["assetNodeOrError"]["assetChecksOrError"]["checks"]}
    assert checks["split_integrity"] == "SUCCEEDED" and checks["excluded_bricks_absent"] == "SUCCEEDED"
    assert (root / "smoke" / "evaluation_report" / "report.json").exists()  # the run got through evaluation


def test_asset_page_shows_its_checks_and_a_plot_in_a_browser(finished_run, tmp_path):
    port, root = finished_run
    page = f"http://127.0.0.1:{port}/assets/evaluation_report"
    checks = rendered_dom(f"{page}?view=checks", tmp_path / "profile_checks")
    for name in ("test_auroc", "precision_at_recall_0_90", "deployable_without_control", "calibration_ece"):
        assert name in checks, name
    _Files.fetched.clear()
    overview = rendered_dom(page, tmp_path / "profile_overview")
    assert "/smoke/evaluation_report/plots/thumbnails/roc.png" in overview  # an <img> on the page itself, no pop-up
    assert "/smoke/evaluation_report/plots/thumbnails/roc.png" in _Files.fetched  # and the browser loaded it
    assert "/smoke/evaluation_report/plots/roc.png" in overview  # the thumbnail links the full plot
    assert "/smoke/evaluation_report/report.html" in overview  # the report one click away
    assert not re.search(r">\s*nan\s*<", overview)  # an unmeasured value reads "not measurable"


# Each rendered <img>: its loaded size, and the right edge of what shows of it (the viewport and every
# ancestor that clips or scrolls its overflow cut it off).
IMAGE_FIT = """
return [...document.images].filter(img => img.getClientRects().length).map(img => {
  const box = img.getBoundingClientRect();
  let visible = document.documentElement.clientWidth;
  for (let el = img.parentElement; el; el = el.parentElement) {
    if (getComputedStyle(el).overflowX !== "visible") {
      visible = Math.min(visible, el.getBoundingClientRect().left + el.clientLeft + el.clientWidth);
    }
  }
  return {src: img.src.slice(0, 100), loaded: img.complete && img.naturalWidth > 0, natural: img.naturalWidth,
          left: box.left, right: box.right, visible: visible};
});"""


def overflowing(images: list[dict]) -> list[str]:
    """Images cut off on the right, as shown or at their own size (a plot shrunk to fit is unreadable)."""
    return [f"{i['src']}: {i['natural']} px wide, from x={i['left']:.0f} to {i['right']:.0f}, visible to "
            f"x={i['visible']:.0f}" for i in images if max(i["right"], i["left"] + i["natural"]) > i["visible"] + 0.5]


def test_plots_fit_the_asset_page_at_1280_px_and_the_report_opens_with_its_verdict(finished_run, tmp_path):
    port, _ = finished_run
    page = f"http://127.0.0.1:{port}/assets/evaluation_report"
    reply = requests.post(f"http://127.0.0.1:{port}/graphql", timeout=30, json={
        "query": CHECKS_QUERY, "variables": {"key": {"path": ["evaluation_report"]}}}).json()
    described = {c["name"]: c["description"] for c in reply["data"]["assetNodeOrError"]["assetChecksOrError"]["checks"]}
    with webdriver(tmp_path / "profile", width=1280) as browser:
        browser.open(f"{page}?view=checks&checkDetail=test_auroc")
        browser.wait_for(f"return document.body.innerText.includes({json.dumps(described['test_auroc'])})",
                         f"test_auroc's description {described['test_auroc']!r} on the checks view")
        browser.open(page)
        assert browser.script("return window.innerWidth") == 1280
        plots = browser.wait_for(
            "const shown = [...document.images].filter(i => i.src.includes('/evaluation_report/plots/'));"
            f"return shown.length >= {len(KEY_PLOTS)} && shown.every(i => i.complete && i.naturalWidth > 0)"
            " && shown.map(i => i.src)", f"the {len(KEY_PLOTS)} key plots")
        assert len(plots) == len(KEY_PLOTS)
        images = browser.script(IMAGE_FIT)
        assert not overflowing(images), overflowing(images)
        report = browser.script("return [...document.links].map(a => a.href).find(h => h.endsWith('/report.html'))")
        browser.open(report)
        banner = browser.script("const first = document.body.firstElementChild;"
                                "return first.classList.contains('verdict') && first.querySelector('h1').innerText")
        assert re.match(r"(GO|NO-GO)\b", banner or ""), banner
        images = browser.script(IMAGE_FIT)
        assert len(images) >= len(KEY_PLOTS) and all(i["loaded"] for i in images)
        assert not overflowing(images), overflowing(images)
