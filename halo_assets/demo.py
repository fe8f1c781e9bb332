"""`python -m halo_assets.demo`: materialize the whole graph in the persistent local Dagster instance
($DAGSTER_HOME) and print the GO / NO-GO verdict with every check that decided it.

Exit status: 0 on GO, 1 on NO-GO (a blocking check failed: an answer, not an error), 2 when something
crashed (a step failed for another reason than a check, or the run could not start)."""

import argparse
import os
import sys
import traceback
from pathlib import Path

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.workspace.load import location_origins_from_yaml_paths

from halo_assets.console import CHECK_FAILED
from halo_assets.metadata import EXPECTED, OBSERVED, N
from halo_assets.resources import DEFAULT_FILES_URL, DEFAULT_ROOT, PARTITION_TAG, PROFILES, HaloSettings
from halo_core import uris
from halo_core.config import config_args
from halo_core.errors import HaloError
from halo_core.evaluation.report import REPORT_HTML

ROOT = Path(__file__).resolve().parents[1]  # where workspace.yaml names the code location
DEFINITIONS_MODULE, JOB = "halo_assets.definitions", "retrain_job"
GO, NO_GO, CRASHED = 0, 1, 2  # exit statuses
VERDICT_TAG, FAILED_TAG = "halo/verdict", "halo/failed_checks"
MAX_TAG_CHARS = 1000  # a run tag is a short string; the check results hold the rest


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
                  "execution": {"config": {"in_process": {}}},  # one process, as execute_in_process
                  # halo's console logger (halo_assets.console) at Dagster's default level: a failed blocking
                  # check prints as a NO-GO line, without a stack trace
                  "loggers": {"console": {"config": {"log_level": instance.python_log_level or "DEBUG"}}}}
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


def crashed_steps(result) -> list[str]:
    """Steps that failed for another reason than a blocking check: a crash, not a verdict."""
    return [ev.step_key for ev in result.all_events
            if ev.is_step_failure and ev.step_failure_data.error.cls_name != CHECK_FAILED]


def exit_status(result) -> int:
    if crashed_steps(result):
        return CRASHED
    return GO if verdict(result)[0] else NO_GO


def _shown(value: dg.MetadataValue | None) -> str:
    if value is None:
        return "-"
    v = value.value
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _mark(e: dg.AssetCheckEvaluation) -> str:
    return "pass" if e.passed else ("warn" if e.severity == dg.AssetCheckSeverity.WARN else "FAIL")


def check_rows(evaluations: list[dg.AssetCheckEvaluation]) -> list[dict[str, str]]:
    """One row per check, failures first: what it observed, its limit, n, and what it means."""
    from halo_assets.definitions import defs  # the specs' one-line descriptions

    graph = defs.resolve_asset_graph()
    order = {"FAIL": 0, "warn": 1, "pass": 2}
    rows = [{"result": _mark(e), "check": f"{e.asset_key.to_user_string()}.{e.check_name}",
             "observed": _shown(e.metadata.get(OBSERVED)), "limit": _shown(e.metadata.get(EXPECTED)),
             "n": _shown(e.metadata.get(N)),
             "meaning": graph.get_check_spec(dg.AssetCheckKey(e.asset_key, e.check_name)).description or ""}
            for e in evaluations]
    return sorted(rows, key=lambda r: (order[r["result"]], r["check"]))


def table_text(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "  no check ran"
    columns = ("result", "check", "observed", "limit", "n", "meaning")
    width = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns[:-1]}
    line = lambda r: "  ".join(r[c].ljust(width[c]) for c in columns[:-1]) + "  " + r["meaning"]  # noqa: E731
    return "\n".join(["  " + line({c: c for c in columns}), *("  " + line(r) for r in rows)])


def verdict_tags(status: int, rows: list[dict[str, str]]) -> dict[str, str]:
    """What the run says about itself in the UI's run list: the verdict and, on NO-GO, why."""
    failed = "; ".join(f"{r['check']} {r['observed']} (limit {r['limit']})" for r in rows if r["result"] == "FAIL")
    tags = {VERDICT_TAG: {GO: "GO", NO_GO: "NO-GO: not promoted", CRASHED: "ERROR: a step crashed"}[status]}
    if failed:
        tags[FAILED_TAG] = failed if len(failed) <= MAX_TAG_CHARS else failed[:MAX_TAG_CHARS - 3] + "..."
    return tags


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config_args(p, default_preset="demo")
    p.add_argument("--root", default=DEFAULT_ROOT, help="artifact root (local folder or s3:// URI)")
    args = p.parse_args(argv)
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)  # persistent, so `make ui` shows this run afterwards
    instance = dg.DagsterInstance.get()
    try:
        settings = HaloSettings(preset=args.preset, config_path=args.config or "", root_uri=args.root,
                                files_url=DEFAULT_FILES_URL if args.root == DEFAULT_ROOT else "")
        result = run_retrain(args.preset, args.set, args.root, instance, args.config or "")
    except HaloError as err:  # a config or input the user can fix: the message says what
        print(f"error: {err}", file=sys.stderr)
        return CRASHED
    except Exception:  # noqa: BLE001 -- anything else is a crash: keep its traceback
        traceback.print_exc()
        return CRASHED
    status = exit_status(result)
    rows = check_rows(verdict(result)[1])
    instance.add_run_tags(result.run_id, verdict_tags(status, rows))
    print(f"\nrun {result.run_id} ({settings.own_profile()})\n{table_text(rows)}")
    for step in crashed_steps(result):
        print(f"  ERROR in step {step}: its traceback is in the log above and in `make ui`, run {result.run_id}")
    failed = [r["check"] for r in rows if r["result"] == "FAIL"]
    print({GO: "\nverdict: GO: promoted",
           NO_GO: f"\nverdict: NO-GO: not promoted; {len(failed)} blocking check(s) failed: {', '.join(failed)}",
           CRASHED: "\nverdict: none: a step crashed (see ERROR above)"}[status])
    report = uris.join(settings.current("evaluation_report"), REPORT_HTML)
    if uris.exists(report):  # not when the run stopped before evaluating
        print(f"report:  {report}")
        if url := settings.url("evaluation_report", REPORT_HTML):
            print(f"         {url} (while `make ui` runs)")
    return status


if __name__ == "__main__":
    sys.exit(main())
