"""Where Ray work runs (docs/design.md §13 (survey path)): a local Ray started inside the step and limited to the
cores the step may use, or the cluster named by ``HALO_RAY_ADDRESS`` (KubeRay, any Ray cluster)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
RAY_ADDRESS_ENV = "HALO_RAY_ADDRESS"
LOCAL_OBJECT_STORE_BYTES = 1 << 30


def step_cpus() -> int:
    """The cores this process may run on (its affinity mask, which a container's cpuset also sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the duration of one step. A Ray already initialised by the caller (a test session, a
    notebook) is used as it is and left running; otherwise the step starts and stops its own."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = os.environ.get(RAY_ADDRESS_ENV)
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
    else:
        # Ray Data streams within the object store's budget: a bounded store bounds the step's memory,
        # whatever the input size (by default Ray takes 30 % of the RAM)
        ray.init(num_cpus=num_cpus or step_cpus(), object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def pool_size(per_worker_cpus: float = 1.0) -> tuple[int, float]:
    """(actors, GPUs per actor) for a ``map_batches`` actor pool: one actor per GPU when the cluster
    has GPUs; otherwise CPU actors that leave a quarter of the CPUs (at least one) free: a catalogue
    worker reads and decodes in a second thread beside its forward (docs/design.md §13 (survey path))."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, 1.0
    cpus = int(resources.get("CPU", 1))
    return max(1, int((cpus - max(1, cpus // 4)) // per_worker_cpus)), 0.0


class _NoFalseHangWarning(logging.Filter):
    """Ray Data warns "The Dataset job will hang unless more CPUs are freed up" whenever no CPU is free at
    the moment a dataset starts, which is every catalogue build: its actor pool holds the CPUs it was
    sized for (pool_size leaves the readers theirs). Read as a failure, it is not one; dropped here.
    Ray's starvation warning (an operator that truly cannot run) is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "will hang unless more CPUs" in record.getMessage():
            log.debug("Ray Data: no CPU free when the dataset started (the actor pool holds its own)")
            return False
        return True


def quiet_progress() -> None:
    """Ray Data's progress bars are noise in a Dagster log (halo_core.progress reports instead), and so is
    its false "will hang" warning."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    hang = logging.getLogger("ray.data.dataset")
    if not any(isinstance(f, _NoFalseHangWarning) for f in hang.filters):
        hang.addFilter(_NoFalseHangWarning())
