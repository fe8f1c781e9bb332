"""Survey scoring at the speed of the network (docs/design.md §6 (performance), §13 (survey path)), one JSON line per figure, the
machine's load beside each:

- the bare forward pass: the same ResNet18, in the model card's precision (and the other one), batch
  256, 1 torch thread (what each scoring worker and `halo score`'s forward use) and all cores; median of 3;
- `halo score` (one process, no Ray: read, decode, crop, preprocess in a thread ahead of the forward)
  and `halo catalog` with 1 and 2 scoring workers (start-up apart: Ray's, then the workers' until
  their first call), their steady-state rates, their ratios to the bare forward, and where the time
  went (decode, preprocess, forward, write, waiting);
- with ``--before PATH`` (a checkout of older code, e.g. `git worktree add /tmp/old 066af9d`), the same
  pipelines and the filter run by that code in a subprocess on the same files, in the same run;
- the filter: single process on one core (read, decode 2 npz, preprocess, write float16 shards), now and
  before interleaved over 5 rounds, microseconds per row by stage, the shards compared byte for byte; Ray
  on all cores (``--filter-only``: nothing else);
- ``--memory``: peak memory (RSS and PSS summed over the process tree) of `halo score` and `halo catalog`
  at ``--cutouts`` and ``--big`` cutouts, and its growth between them (with ``--before``, that code's too);
- the 10^7-cutout projection from the measured points.

    python -m benchmarks.survey [--cutouts 20000] [--before /tmp/old] [--memory --big 50000] [--filter-only]

Weights are a freshly initialised ResNet18 (throughput does not depend on what it learned). Run it on a
machine as quiet as you can make it, and compare ratios measured in one run.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # a scoring worker's forward runs on one thread

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from benchmarks.common import machine  # noqa: E402
from halo_core import precision as numerics  # noqa: E402
from halo_core.config import SimulationConfig, load_preset  # noqa: E402
from halo_core.data.preprocess import PreprocessSpec  # noqa: E402
from halo_core.evaluation.calibration import Calibration  # noqa: E402
from halo_core.model.checkpoint import save_checkpoint  # noqa: E402
from halo_core.model.network import build_model  # noqa: E402
from halo_core.simulate import simulate_dataset  # noqa: E402

STAGES = ("decode", "preprocess", "forward", "write", "waiting")


def load() -> float:
    return os.getloadavg()[0]


def emit(**row) -> None:
    print(json.dumps({**row, "load_1min": round(load(), 2)}), flush=True)


def model_file(root: Path) -> tuple[str, str]:
    """A demo-preset model card recording the precision this machine trains in; (path, precision)."""
    cfg = load_preset("demo")
    precision = cfg.resolved_precision()
    path = str(root / "model.pt")
    sidecar = {"model_name": "resnet18", "input_channels": 3, "needs_control": False, "precision": precision,
               "preprocess": PreprocessSpec.from_config(cfg).to_dict(), "config": cfg.model_dump(mode="json"),
               "calibration": Calibration(1.0, 0.0, 0.5, 1).to_dict(),
               "test_metrics": {"tpr_at_fpr": [{"fpr": 1e-2, "tpr": 0.9, "threshold": 0.9}]}}
    save_checkpoint(path, {"model": build_model("resnet18", 3).state_dict()}, sidecar)
    return path, precision


def bare_forward(precision: str, threads: int, batch: int = 256, repeats: int = 3, batches: int = 8) -> float:
    """img/s of the bare forward pass (channels_last, no_grad), median of ``repeats`` timed runs of ``batches``
    batches each (one batch, ~0.5 s, read anywhere from 320 to 510 img/s on this shared VM)."""
    torch.set_num_threads(threads)
    model = build_model("resnet18", 3).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    rates = []
    with torch.no_grad(), numerics.autocast(precision, "cpu"):
        model(x)
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(batches):
                model(x)
            rates.append(batch * batches / (time.perf_counter() - started))
    torch.set_num_threads(1)
    return statistics.median(rates)


def copied(files, folder: Path, copies: int, prefix: str) -> list[str]:
    """``files`` copied ``copies`` times into ``folder`` under other names: a survey of repeated cutouts."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for c in range(copies):
        for f in files:
            out.append(str(folder / f"{prefix}{c}-{Path(f).name}"))
            shutil.copy(f, out[-1])
    return out


def cutouts(root: Path, n: int) -> list[str]:
    """~n paired-parquet cutouts from the simulator (test split rows, 4 per LRG): 2,000 simulated,
    copied up to n (throughput does not depend on which galaxies)."""
    simulate_dataset(root / "sim", SimulationConfig(n_lrg={"train": 120, "val": 10, "test": 500},
                                                    domain_randomization=False), rows_per_file=1000)
    files = sorted((root / "sim" / "test").glob("*.parquet"))
    return copied(files, root / "survey", max(1, n // 2000), "copy")


# The pipelines, run by whichever code a PYTHONPATH names (this checkout, or --before's): only the
# APIs both share (score, CatalogModel, build_catalog, build_filtered_dataset).
PIPELINE = textwrap.dedent('''
    import importlib.util, json, os, sys, time
    import torch
    torch.set_num_threads(1)
    import halo_core
    spec = importlib.util.spec_from_file_location("halo_bench_peak_rss", os.environ["HALO_BENCH_PEAK_RSS"])
    peak_rss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peak_rss)
    PeakRss = peak_rss.PeakRss
    what, model_path, out, workers, files = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
    started = time.perf_counter()
    with PeakRss() as mem:
        if what == "score":
            from halo_core.survey import scoring
            if hasattr(scoring, "score_to_csv"):
                summary = scoring.score_to_csv(model_path, files, out)
                rows, timings = summary.rows, dict(summary.timings)
            else:
                table = scoring.score(model_path, files)
                table.to_csv(out, index=False)
                rows, timings = len(table), {}
        else:
            from halo_core.survey.candidates import CatalogModel, build_catalog
            report = build_catalog(CatalogModel.from_checkpoint(model_path), files, out, num_cpus=workers + 1)
            rows, timings = report.rows, dict(getattr(report, "timings", {}))
    print("RESULT " + json.dumps({"rows": rows, "seconds": time.perf_counter() - started, "timings": timings,
                                  "peak_rss_mb": round(mem.peak / 2**20), "peak_pss_mb": round(mem.peak_pss / 2**20),
                                  "halo_core": halo_core.__file__}))
''')

FILTER = textwrap.dedent('''
    import json, sys, time
    from halo_core.config import load_preset
    from halo_core.data import filtering
    raw, out, on_ray, cpus = sys.argv[1], sys.argv[2], sys.argv[3] == "ray", int(sys.argv[4])
    # where the time goes in one process: the filter's own calls of these names, timed where it makes them
    # (~1 us a call; on Ray the work runs in tasks that import the module afresh, untimed)
    seconds, read_split = {}, filtering.read_split
    def timed(stage, fn):
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started
        return call
    def timed_reads(*args, **kwargs):
        parts = read_split(*args, **kwargs)
        while True:
            started = time.perf_counter()
            part = next(parts, None)
            seconds["read"] = seconds.get("read", 0.0) + time.perf_counter() - started
            if part is None:
                return
            yield part
    filtering.read_split = timed_reads
    stages = {"decode_stamp": "decode", "preprocess": "preprocess", "preprocess_with_core": "preprocess",
              "core_brightness": "preprocess"}  # the names either code calls
    for name, stage in stages.items():
        if hasattr(filtering, name):
            setattr(filtering, name, timed(stage, getattr(filtering, name)))
    filtering.ShardWriter.append = timed("write", filtering.ShardWriter.append)
    filtering.ShardWriter.close = timed("write", filtering.ShardWriter.close)
    cfg = load_preset("demo")
    started = time.perf_counter()
    report = filtering.build_filtered_dataset(cfg, raw, out, on_ray=on_ray, num_cpus=cpus)
    rows = sum(r.rows_in for r in report.splits.values())
    import halo_core
    print("RESULT " + json.dumps({"rows": rows, "seconds": time.perf_counter() - started, "timings": seconds,
                                  "halo_core": halo_core.__file__}))
''')


def _module_from(code_root: str, relative: str, name: str):
    """A single module of another checkout, loaded under its own name beside this one's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(code_root) / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def components(before: str | None, model_path: str, parquet: str, n: int = 512, rounds: int = 5) -> None:
    """Per-cutout microseconds of decode, preprocess and forward on 1 thread, this code against the
    code at ``before``, interleaved round by round (a shared machine's load moves between runs; the
    median of each stage over the rounds and the median of the per-round ratios are reported)."""
    import numpy as np
    import pyarrow.parquet as pq

    from halo_core.data.preprocess import preprocess
    from halo_core.data.stamps import decode_stamp
    from halo_core.model.checkpoint import model_spec
    from halo_core.survey.scoring import ScoringModel

    blobs = pq.read_table(parquet, columns=["stamp_npz"])["stamp_npz"].to_pylist()[:n]
    scorer = ScoringModel.load(model_path)
    spec = model_spec(scorer.sidecar)
    old_model = build_model("resnet18", 3).eval()  # what ScoringModel.predict ran: fp32, NCHW, no channels_last
    old_model.load_state_dict(scorer.model.state_dict())
    codes = {"now": (decode_stamp, preprocess, scorer.engine.logits)}
    if before:
        old_stamps = _module_from(before, "halo_core/data/stamps.py", "halo_before_stamps")
        old_pre = _module_from(before, "halo_core/data/preprocess.py", "halo_before_preprocess")
        old_spec = old_pre.PreprocessSpec.from_dict(scorer.sidecar["preprocess"])

        def old_forward(x):
            with torch.no_grad():
                return np.concatenate([old_model(torch.from_numpy(x[i:i + 256])).squeeze(1).numpy()
                                       for i in range(0, len(x), 256)])

        codes["before"] = (old_stamps.decode_stamp, lambda b, _spec: old_pre.preprocess(b, old_spec), old_forward)
    us = {label: {s: [] for s in ("decode", "preprocess", "forward")} for label in codes}
    for _ in range(rounds):
        for label, (decode, prep, forward) in codes.items():
            started = time.perf_counter()
            stamps = np.nan_to_num(np.stack([decode(b, source="s", task_id="t", column="c") for b in blobs]))
            decoded = time.perf_counter()
            x = np.concatenate([prep(stamps[i:i + 256], spec) for i in range(0, n, 256)])
            prepared = time.perf_counter()
            forward(x)
            for stage, seconds in (("decode", decoded - started), ("preprocess", prepared - decoded),
                                   ("forward", time.perf_counter() - prepared)):
                us[label][stage].append(seconds / n * 1e6)
    for label, stages in us.items():
        emit(benchmark=f"{label}_us_per_cutout", cutouts=n, rounds=rounds,
             **{s: round(statistics.median(v), 1) for s, v in stages.items()})
    if before:
        emit(benchmark="speedup_now_vs_before", **{s: round(statistics.median(
            [b / a for a, b in zip(us["now"][s], us["before"][s])]), 2) for s in us["now"]})


def run_code(code_root: str, script: str, *args, cpus: list[int] | None = None) -> dict:
    """Run ``script`` with the halo_core of ``code_root`` in a subprocess started there (``python -c`` puts
    its working directory first on sys.path: started from this checkout, it would run this checkout's code
    whatever PYTHONPATH says, which once made a "before" run measure the new code); on the cores ``cpus``."""
    env = {**os.environ, "PYTHONPATH": code_root, "HALO_BENCH_PEAK_RSS": str(Path(__file__).with_name("peak_rss.py"))}
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, cwd=code_root,
                          capture_output=True, text=True,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{script[:40]!r} with {code_root}: {done.stderr[-2000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    ran = Path(result["halo_core"]).resolve()
    assert ran.is_relative_to(Path(code_root).resolve()), f"asked for {code_root}'s halo_core, ran {ran}"
    return result


def table(timings: dict, seconds: float) -> dict:
    """Stage -> share of the run's time (summed over workers; `waiting` is the writer's wait for input)."""
    return {s: round(timings.get(s, 0.0) / seconds, 3) for s in STAGES if s in timings}


def pipelines(label: str, code: str, model: str, files: list[str], n: int, root: Path, bare: dict) -> dict:
    """halo score and halo catalog (1 and 2 scoring workers) run by ``code``; their rates and ratios."""
    rates = {}
    for what, workers in (("score", 0), ("catalog", 1), ("catalog", 2)):
        name = "halo_score" if what == "score" else f"halo_catalog_{workers}_worker{'s' if workers > 1 else ''}"
        out = root / f"{label}-{name}{'.csv' if what == 'score' else ''}"
        r = run_code(code, PIPELINE, what, model, out, workers, *files)
        assert r["rows"] == n, (r["rows"], n)
        # start-up reported apart: Ray's, then the scoring workers' until their first call (import torch, load
        # the model); code that does not report them has them in its steady state
        ray_start, workers_start = (r["timings"].get(k, 0.0) for k in ("ray_start", "workers_start"))
        steady = r["seconds"] - ray_start - workers_start
        rates[name] = n / steady
        emit(benchmark=f"{label}_{name}", cutouts=n, seconds=round(r["seconds"], 1), ray_start_s=round(ray_start, 1),
             workers_start_s=round(workers_start, 1), cutouts_per_s=round(n / steady, 1),
             end_to_end_per_s=round(n / (r["seconds"] - ray_start), 1), peak_rss_mb=r["peak_rss_mb"],
             **{f"vs_bare_{k}": round(n / steady / v, 3) for k, v in bare.items()},
             where_time_goes=table(r["timings"], steady), seconds_by_stage={k: round(v, 1) for k, v in r["timings"].items()})
    return rates


FILTER_STAGES = ("read", "decode", "preprocess", "write")


def filters(code_now: str, before: str | None, root: Path, rounds: int = 5) -> None:
    """The filter in one process on one core, this code and --before's interleaved round by round (the
    median of the per-round ratios), with the microseconds per row of each stage (the rest: vetting,
    stacking, the manifest); then on Ray with every core."""
    cfg = load_preset("demo", {"simulation": {"n_lrg": {"train": 1500, "val": 20, "test": 20}}})
    simulate_dataset(root / "paired", cfg.simulation, rows_per_file=500)
    codes = [("now", code_now)] + ([("before", before)] if before else [])
    runs = {label: [] for label, _ in codes}
    for _ in range(rounds):
        for label, code in codes:
            runs[label].append(run_code(code, FILTER, root / "paired", root / f"filter-{label}-single", "single", 1,
                                        cpus=[0]))
    rates = {}
    for label, results in runs.items():
        rates[label] = [r["rows"] / r["seconds"] for r in results]
        us = {s: statistics.median(r["timings"].get(s, 0.0) / r["rows"] * 1e6 for r in results) for s in FILTER_STAGES}
        us["other"] = statistics.median(1e6 * (r["seconds"] - sum(r["timings"].get(s, 0.0) for s in FILTER_STAGES))
                                        / r["rows"] for r in results)
        emit(benchmark=f"filter_{label}_single", cpus=1, rows=results[0]["rows"], rounds=rounds,
             rows_per_s=round(statistics.median(rates[label]), 1), us_per_row={k: round(v) for k, v in us.items()})
    r = run_code(code_now, FILTER, root / "paired", root / "filter-now-ray", "ray", os.cpu_count())
    emit(benchmark="filter_now_ray", cpus=os.cpu_count(), rows=r["rows"], seconds=round(r["seconds"], 1),
         rows_per_s=round(r["rows"] / r["seconds"], 1))
    row = {"ray_vs_single": round(r["rows"] / r["seconds"] / statistics.median(rates["now"]), 2)}
    if before:
        ratios = [a / b for a, b in zip(rates["now"], rates["before"])]
        same = all((root / "filter-now-single" / s / f).read_bytes() == (root / "filter-before-single" / s / f).read_bytes()
                   for s in ("train", "val", "test") for f in ("pairs.f16", "meta.parquet"))
        row.update(single_now_vs_before=round(statistics.median(ratios), 2),
                   single_now_vs_before_rounds=[round(x, 2) for x in ratios], shards_byte_identical=same)
    emit(benchmark="filter_ratios", **row)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cutouts", type=int, default=20_000)
    p.add_argument("--before", help="a checkout of the code to compare with, run on the same files")
    p.add_argument("--memory", action="store_true", help="peak memory at --cutouts and --big cutouts")
    p.add_argument("--big", type=int, default=50_000)
    p.add_argument("--skip-filter", action="store_true")
    p.add_argument("--filter-only", action="store_true", help="only the filter, now (and --before)")
    p.add_argument("--selection", action="store_true", help="also time the selection function's default grid")
    p.add_argument("--components", action="store_true", help="only the bare forward and the per-stage costs")
    args = p.parse_args(argv)
    here = str(Path(__file__).resolve().parents[1])
    emit(benchmark="machine", **machine())
    with tempfile.TemporaryDirectory(prefix="halo-bench-survey-") as tmp:
        root = Path(tmp)
        if args.filter_only:
            return filters(here, args.before, root)
        path, precision = model_file(root)
        files = cutouts(root, args.cutouts)
        n = _rows(files)
        other = "fp32" if precision == "bf16" else "bf16"
        bare = {f"{precision}_1_thread": bare_forward(precision, 1),
                f"{precision}_{os.cpu_count()}_threads": bare_forward(precision, os.cpu_count()),
                f"{other}_1_thread": bare_forward(other, 1)}
        emit(benchmark="bare_forward", batch=256, median_of=3, model_precision=precision,
             img_per_s={k: round(v, 1) for k, v in bare.items()})
        components(args.before, path, files[0])
        if args.components:
            return
        if args.memory:
            return _memory(args, root, path, files, n, here)
        now = pipelines("now", here, path, files, n, root, bare)
        if args.before:
            pipelines("before", args.before, path, files, n, root, bare)
        if not args.skip_filter:
            filters(here, args.before, root)
        if args.selection:
            from halo_core.survey.candidates import CatalogModel
            from halo_core.survey.selection import selection_function

            result = selection_function(load_preset("demo"), CatalogModel.from_checkpoint(path))
            emit(benchmark="selection_function_default_grid", cells=len(result.cells), injections=result.n,
                 seconds=result.seconds)
        one, two = now["halo_catalog_1_worker"], now["halo_catalog_2_workers"]
        # a scoring worker is one core plus its share of the decode; 16 cores at the measured per-worker
        # rate of 1 worker (2 cores: 1 scoring + 1 decoding), i.e. 8 such pairs, and at the 2-worker rate
        emit(benchmark="projection_1e7_cutouts", cores=16, points={"1_worker_on_2_cores": round(one, 1),
                                                                    "2_workers_on_2_cores": round(two, 1)},
             hours_16_cores_from_1_worker_pairs=round(1e7 / (one * 8) / 3600, 2),
             hours_this_machine=round(1e7 / max(one, two) / 3600, 2),
             note="16 cores = 8 x (1 scoring + 1 decoding core), linear in pairs: an assumption until measured there")


def _memory(args, root: Path, path: str, files: list[str], n: int, here: str) -> None:
    """Peak memory at both sizes, this code and --before's on the same files, and its growth. Summed RSS
    counts a page shared by several processes (torch's libraries in the driver and each worker) once per
    process; summed PSS counts it once."""
    big = copied(files, root / "survey", max(1, args.big // n), "again") if args.big > n else files
    codes = [("now", here)] + ([("before", args.before)] if args.before else [])
    for what, workers in (("score", 0), ("catalog", 1)):
        for label, code in codes:
            peaks = {}
            for size, chosen in (("small", files), ("big", big)):
                out = root / f"mem-{label}-{size}-{what}{'.csv' if what == 'score' else ''}"
                peaks[size] = r = run_code(code, PIPELINE, what, path, out, workers, *chosen)
                emit(benchmark=f"memory_{label}_{what}_{size}", cutouts=_rows(chosen), peak_rss_mb=r["peak_rss_mb"],
                     peak_pss_mb=r["peak_pss_mb"], seconds=round(r["seconds"], 1))
            emit(benchmark=f"memory_{label}_{what}_growth", **{
                f"{m}_pct": round(100 * (peaks["big"][m] / peaks["small"][m] - 1), 1) for m in ("peak_rss_mb", "peak_pss_mb")})


def _rows(files: list[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


if __name__ == "__main__":
    main()
