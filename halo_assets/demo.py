"""`python -m halo_assets.demo`: materialize the whole graph in the persistent local Dagster instance
($DAGSTER_HOME) and print the GO / NO-GO verdict with every check that decided it."""

import argparse
import os
import sys
from pathlib import Path

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.workspace.load import location_origins_from_yaml_paths

from halo_assets.resources import DEFAULT_FILES_URL, DEFAULT_ROOT, PARTITION_TAG, PROFILES, HaloSettings
from halo_core import uris
from halo_core.config import config_args
from halo_core.evaluation.report import REPORT_HTML

ROOT = Path(__file__).resolve().parents[1]  # where workspace.yaml names the code location
DEFINITIONS_MODULE, JOB = "halo_assets.definitions", "retrain_job"


def run_retrain(preset: str, overrides: list[str], root_uri: str, instance: dg.DagsterInstance, config_path: str = "",
                assets: list[str] | None = None):
    """retrain_job (or only ``assets`` of it, as the UI's Materialize on a selection) for the profile's
    partition, registered first, in this process and recorded as a run of the workspace's code location.
    A plain execute_in_process run carries no code-location origin, and the UI lists a job's runs and the
    Overview timeline by that origin, so such runs would appear only under Runs."""
    profile = HaloSettings(preset=preset, config_path=config_path).own_profile()
    instance.add_dynamic_partitions(PROFILES.name, [profile])
    # report links only where `make ui` serves this root (HALO_ROOT at HALO_FILES_URL)
    files_url = DEFAULT_FILES_URL if root_uri == DEFAULT_ROOT else ""
    run_config = {"resources": {"halo": {"config": {"preset": preset, "config_path": config_path,
                                                    "overrides": overrides, "root_uri": root_uri,
                                                    "files_url": files_url}}},
                  "execution": {"config": {"in_process": {}}}}  # one process, as execute_in_process
    repo = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs", working_directory=str(ROOT))
    job = repo.get_reconstructable_job(JOB)
    selection = frozenset(dg.AssetKey(a) for a in assets) if assets else None
    if selection:
        job = job.get_subset(asset_selection=selection)
    (location,) = location_origins_from_yaml_paths([str(ROOT / "workspace.yaml")])
    run = instance.create_run_for_job(
        job.get_definition(), run_config=run_config, asset_selection=selection,
        tags={**job.get_definition().run_tags, PARTITION_TAG: profile},
        remote_job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), JOB),
        job_code_origin=job.get_python_origin())
    return execute_run(job, run, instance)


def verdict(result) -> tuple[bool, list[dg.AssetCheckEvaluation]]:
    """GO only when the promoted model was written and no ERROR check failed (WARN ones advise)."""
    evaluations = result.get_asset_check_evaluations()
    promoted = any(m.asset_key == dg.AssetKey("promoted_model") for m in result.get_asset_materialization_events())
    return promoted and all(e.passed or e.severity == dg.AssetCheckSeverity.WARN for e in evaluations), evaluations


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    config_args(p, default_preset="demo")
    p.add_argument("--root", default=DEFAULT_ROOT, help="artifact root (local folder or s3:// URI)")
    args = p.parse_args(argv)
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)  # persistent, so `make ui` shows this run afterwards
    settings = HaloSettings(preset=args.preset, config_path=args.config or "", root_uri=args.root,
                            files_url=DEFAULT_FILES_URL if args.root == DEFAULT_ROOT else "")
    result = run_retrain(args.preset, args.set, args.root, dg.DagsterInstance.get(), args.config or "")
    go, evaluations = verdict(result)
    print(f"\nrun {result.run_id} ({settings.own_profile()}): {'succeeded' if result.success else 'stopped by a failed step or check'}")
    for e in sorted(evaluations, key=lambda e: (e.asset_key.to_user_string(), e.check_name)):
        mark = "pass" if e.passed else ("warn" if e.severity == dg.AssetCheckSeverity.WARN else "FAIL")
        print(f"  {mark}  {e.asset_key.to_user_string()}.{e.check_name}")
    # A blocking check that fails is a verdict, not a crash; any other failed step is an error.
    failed_steps = [ev.step_key for ev in result.all_events if ev.is_step_failure
                    and ev.step_failure_data.error.cls_name != "DagsterAssetCheckFailedError"]
    for step in failed_steps:
        print(f"  ERROR in step {step}: see the log above or `make ui`, run {result.run_id}")
    print(f"\nverdict: {'GO' if go else 'NO-GO'}")
    report_dir = settings.uri("evaluation_report")
    print(f"report:  {uris.join(report_dir, REPORT_HTML)}")
    if url := settings.url("evaluation_report", REPORT_HTML):
        print(f"         {url} (while `make ui` runs)")
    return 1 if failed_steps else 0


if __name__ == "__main__":
    sys.exit(main())
