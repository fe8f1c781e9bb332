"""Survey-scale throughput on Ray (docs/design.md §13 (survey path)), one JSON line per figure, the machine's load
beside each: catalogue scoring (cutouts/s per core, 1 and 2 scoring workers, against single-process
`halo score` on the same files), the peak memory of catalogue scoring at two input sizes (streaming:
flat), the filter (rows/s, single process and Ray on 1 and 2 cores), the selection function's
default grid, and the projected wall time for 10^7 cutouts on a 16-core node.

    python -m benchmarks.survey [--cutouts 10000] [--big 50000]

Weights are a freshly initialised ResNet18 (throughput does not depend on what it learned).
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # per-core figures: halo score on one thread, as each scoring actor

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from benchmarks.common import machine  # noqa: E402
from halo_core.config import (
    SimulationConfig,
    load_preset,  # noqa: E402
)
from halo_core.data.filtering import build_filtered_dataset  # noqa: E402
from halo_core.data.preprocess import PreprocessSpec  # noqa: E402
from halo_core.evaluation.calibration import Calibration  # noqa: E402
from halo_core.model.checkpoint import save_checkpoint  # noqa: E402
from halo_core.model.network import build_model  # noqa: E402
from halo_core.simulate import simulate_dataset  # noqa: E402
from halo_core.survey.candidates import CatalogModel, build_catalog  # noqa: E402
from halo_core.survey.scoring import score  # noqa: E402


def load() -> float:
    return os.getloadavg()[0]


class PeakRss:
    """Peak summed RSS of this process and all its descendants (Ray's raylet, workers), from /proc."""

    def __init__(self, every_s: float = 0.2):
        self.peak, self._stop, self.every_s = 0, threading.Event(), every_s

    def _tree_rss(self) -> int:
        parents, rss = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            parents[int(entry)] = int(fields["PPid"])
            rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            pid = frontier.pop()
            for child, parent in parents.items():
                if parent == pid and child not in tree:
                    tree.add(child)
                    frontier.append(child)
        return sum(rss.get(p, 0) for p in tree)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._tree_rss())
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def emit(**row) -> None:
    print(json.dumps({**row, "load_1min": round(load(), 2)}), flush=True)


def model_file(root: Path) -> str:
    cfg = load_preset("demo")
    path = str(root / "model.pt")
    sidecar = {"model_name": "resnet18", "input_channels": 3, "needs_control": False,
               "preprocess": PreprocessSpec.from_config(cfg).to_dict(), "config": cfg.model_dump(mode="json"),
               "calibration": Calibration(1.0, 0.0, 0.5, 1).to_dict(),
               "test_metrics": {"tpr_at_fpr": [{"fpr": 1e-2, "tpr": 0.9, "threshold": 0.9}]}}
    save_checkpoint(path, {"model": build_model("resnet18", 3).state_dict()}, sidecar)
    return path


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
    """~n paired-parquet cutouts from the simulator (test split rows, 4 per LRG)."""
    simulate_dataset(root / "sim", SimulationConfig(n_lrg={"train": 120, "val": 10, "test": n // 4},
                                                    domain_randomization=False), rows_per_file=2000)
    return copied(sorted((root / "sim" / "test").glob("*.parquet")), root / "survey", 1, "copy")


def catalogue(model: CatalogModel, files: list[str], out: Path, workers: int, n: int, label: str) -> float:
    # a local Ray with one CPU for the readers beside the scoring workers (ray_runtime.pool_size)
    started = time.perf_counter()
    with PeakRss() as mem:
        report = build_catalog(model, files, str(out), num_cpus=workers + 1)
    seconds = time.perf_counter() - started
    assert report.rows == n, (report.rows, n)
    emit(benchmark=f"catalog_{label}", workers=workers, cutouts=n, seconds=round(seconds, 1),
         cutouts_per_s=round(n / seconds, 1), cutouts_per_s_per_worker=round(n / seconds / workers, 1),
         peak_rss_mb=round(mem.peak / 2**20))
    return n / seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cutouts", type=int, default=10_000)
    p.add_argument("--big", type=int, default=50_000, help="cutouts of the memory comparison (a multiple of --cutouts)")
    p.add_argument("--memory-only", action="store_true", help="only the two 1-worker catalogue runs")
    args = p.parse_args(argv)
    emit(benchmark="machine", **machine())
    with tempfile.TemporaryDirectory(prefix="halo-bench-survey-") as tmp:
        root = Path(tmp)
        path = model_file(root)
        model = CatalogModel.from_checkpoint(path)
        files = cutouts(root, args.cutouts)
        n = _rows(files)
        if args.memory_only:
            catalogue(model, files, root / "cat1", 1, n, "1_worker")
            _big(args, root, model, files, n, None)
            return

        started = time.perf_counter()
        with PeakRss() as mem:
            table = score(path, files)
        seconds = time.perf_counter() - started
        single = n / seconds
        emit(benchmark="halo_score_single_process", cutouts=len(table), seconds=round(seconds, 1),
             cutouts_per_s=round(single, 1), torch_threads=torch.get_num_threads(),
             peak_rss_mb=round(mem.peak / 2**20))
        one = catalogue(model, files, root / "cat1", 1, n, "1_worker")
        two = catalogue(model, files, root / "cat2", 2, n, "2_workers")
        emit(benchmark="catalog_ratios", one_worker_vs_halo_score=round(one / single, 2),
             two_workers_vs_one=round(two / one, 2))
        cfg = load_preset("demo", {"simulation": {"n_lrg": {"train": 600, "val": 20, "test": 20}}})
        simulate_dataset(root / "paired", cfg.simulation, rows_per_file=300)
        for label, on_ray, cpus in (("single_process", False, None), ("ray_1_cpu", True, 1), ("ray_2_cpus", True, 2)):
            started = time.perf_counter()  # Ray's start included
            report = build_filtered_dataset(cfg, str(root / "paired"), str(root / f"f_{label}"), on_ray=on_ray,
                                            num_cpus=cpus)
            seconds = time.perf_counter() - started
            rows = sum(r.rows_in for r in report.splits.values())
            emit(benchmark=f"filter_{label}", rows=rows, seconds=round(seconds, 1), rows_per_s=round(rows / seconds, 1))

        from halo_core.survey.selection import selection_function

        result = selection_function(load_preset("demo"), model)
        emit(benchmark="selection_function_default_grid", cells=len(result["cells"]), injections=result["n"],
             seconds=result["seconds"])
        _big(args, root, model, files, n, one)


def _big(args, root: Path, model: CatalogModel, files: list[str], n: int, one: float | None) -> None:
    copies = max(1, args.big // n)
    big = copied(files, root / "survey", copies, "again")  # n * copies cutouts
    rate = catalogue(model, big, root / "catbig", 1, n * copies, "1_worker_big")
    per_core = max(one or 0, rate)  # one scoring worker = one core (its reader shares the second)
    emit(benchmark="catalog_projection", cutouts=10**7, cores=16, per_core_cutouts_per_s=round(per_core, 1),
         assumed_scoring_workers=12, hours=round(10**7 / (per_core * 12) / 3600, 2),
         note="pool_size leaves a quarter of the cores to the readers; linear scaling assumed")


def _rows(files: list[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


if __name__ == "__main__":
    main()
