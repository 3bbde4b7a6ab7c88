"""The Ray part of a many-model scan: one task per model, results collected as they finish.

Each task reserves ``cpus_per_task`` CPUs and ``gpus_per_task`` GPUs (fractions allowed) and runs
``lmsan.scale.worker.scan_one``. A task whose worker process dies (killed, out of memory, node
lost) is retried by Ray up to ``max_retries`` times, and the retry resumes from the scan's last
per-loop checkpoint; an error inside the scan is not retried (``retry_exceptions=False``) but
comes back as a ``failed`` result. Ray is imported only here, inside the functions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

from lmsan.errors import LmsanError
from lmsan.scale.plan import ModelJob
from lmsan.scale.summary import ModelResult, failed

log = logging.getLogger(__name__)


class ClusterError(LmsanError):
    """The Ray cluster cannot be reached, or it can never fit one task."""


@dataclass(frozen=True)
class Resources:
    """What each task reserves and how often a lost worker is retried.

    Attributes:
        cpus_per_task: Ray CPUs per task (also the scan's torch threads, rounded down, at least 1).
        gpus_per_task: Ray GPUs per task; 0 scans on the CPU, a fraction shares one GPU.
        max_retries: retries of a task whose worker process died (0: none).
    """

    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    max_retries: int = 2


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address``, or start a local one with ``num_cpus`` CPUs.

    A process that already called ``ray.init`` keeps its cluster (an application embedding lmsan).

    Returns:
        True when this call started or joined a cluster (the caller shuts it down with
        ``disconnect``), False when Ray was already initialised.

    Raises:
        ClusterError: the address cannot be reached or the local cluster does not start.
    """
    import ray

    if ray.is_initialized():
        log.info("using the Ray cluster this process already joined")
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a scanner
    try:
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = f"at {address}" if address else "(local)"
        raise ClusterError(f"cannot start or join the Ray cluster {where}: {exc}") from exc
    log.info("Ray cluster %s: %s", address or "local", _describe(ray.cluster_resources()))
    return True


def disconnect() -> None:
    """Leave the cluster ``connect`` joined (a local one stops)."""
    import ray

    ray.shutdown()


def check_fits(resources: Resources, *, strict: bool) -> None:
    """Make sure the cluster has the CPUs and GPUs one task reserves (else its tasks never start).

    Args:
        strict: raise (a local cluster cannot grow); otherwise only warn (an autoscaling cluster
            may add the nodes later).

    Raises:
        ClusterError: ``strict`` and the whole cluster has fewer CPUs or GPUs than one task.
    """
    import ray

    total = ray.cluster_resources()
    for key, need in (("CPU", resources.cpus_per_task), ("GPU", resources.gpus_per_task)):
        have = float(total.get(key, 0.0))
        if need > have:
            message = f"each task reserves {need:g} {key}(s) but the Ray cluster has {have:g}"
            if strict:
                raise ClusterError(message)
            log.warning("%s: tasks wait until the cluster grows", message)


def scan_all(jobs: list[ModelJob], mine_args: tuple[str, ...], resources: Resources, *,
             on_result: Callable[[ModelResult], None]) -> None:
    """Scan every job on the joined cluster, one task each, calling ``on_result`` as each finishes.

    Args:
        jobs: the models to scan (the done ones already left out).
        mine_args: ``lmsan-mine`` options for every model (see ``worker.scan_one``).
        resources: per-task reservation and retries.
        on_result: called in the driver with each result, in the order the tasks finish.

    A task lost more than ``max_retries`` times, or any other Ray failure, gives a ``failed``
    result naming the Ray error. On KeyboardInterrupt the outstanding tasks are cancelled.
    """
    import ray

    remote = ray.remote(_task).options(num_cpus=resources.cpus_per_task, num_gpus=resources.gpus_per_task,
                                       max_retries=resources.max_retries, retry_exceptions=False)
    running = {remote.remote(job, mine_args): job for job in jobs}
    try:
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            job = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                result = failed(job, f"Ray task lost (after {resources.max_retries} retries): "
                                     f"{type(exc).__name__}: {str(exc).strip()}")
            on_result(result)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


def _task(job: ModelJob, mine_args: tuple[str, ...]) -> ModelResult:
    """The Ray task body: scan one model in the worker process."""
    from lmsan.scale.worker import scan_one

    return scan_one(job, mine_args)


def _describe(resources: dict[str, float]) -> str:
    shown = [f"{key} {resources[key]:g}" for key in ("CPU", "GPU") if key in resources]
    return ", ".join(shown) or "no CPUs"
