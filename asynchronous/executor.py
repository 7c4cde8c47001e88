"""Ray for run.py: one connection per process, and `--executor ray`, the grid of an ordinary (central)
experiment fanned out as one Ray task per method run.

Locally Ray is sized for small machines (every core, a 128 MB object store, no dashboard); with
`--ray-address` (e.g. `auto`, after `ray start --head` here and `ray start --address HEAD:6379` on the
other machines) it joins that cluster. A task runs `common.experiment.run_active_learning` exactly as a
local run does, in the same results tree: the per-run locks keep two tasks (or two machines sharing
`--out`) off one run folder, and a re-run resumes. Each machine needs this repository at the same path
and its datasets under the same --data-root.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import datasets_available  # noqa: F401  (registers every dataset, also inside Ray's task workers)
from common.cli import interrupt_on_signals
from common.errors import UserError
from common.experiment import CentralJob, run_central_job
from common.train import set_cpu_threads

REPOSITORY = Path(__file__).resolve().parent.parent
OBJECT_STORE_BYTES = 128 * 1024 * 1024
POLL_SECONDS = 1.0
REACH_SECONDS = 5.0  # how long a HOST:PORT address may take to accept a connection
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def check_address(address: str) -> None:
    """`auto`, `local`, HOST:PORT or ray://HOST:PORT, and for the last two something must listen there:
    a one-line error instead of Ray's traceback or its minute of retries."""
    if address in ("auto", "local"):
        return
    match = _HOST_PORT.match(address)
    if not match or not 0 < int(match["port"]) < 65536:
        raise UserError(f"--ray-address {address!r}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((match["host"].strip("[]"), int(match["port"])), timeout=REACH_SECONDS).close()
    except OSError as error:
        cause = error.strerror or type(error).__name__
        raise UserError(f"--ray-address {address}: no Ray cluster answers there ({cause}); start one with "
                        f"`ray start --head` or leave the flag out for a private Ray") from None


def connect(address: str | None = None) -> bool:
    """Start Ray on this machine, or join the cluster at `address`; an existing connection is reused.
    Returns whether this call connected (the caller then shuts Ray down when it is done)."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")  # a stop signal is ours to report, in one line
    import ray  # noqa: PLC0415  (Ray loads only for asynchronous runs and --executor ray)

    if ray.is_initialized():
        return False
    if address:
        check_address(address)
    job_config = ray.job_config.JobConfig(code_search_path=[str(REPOSITORY)])
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, job_config=job_config)
        else:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     job_config=job_config)
    except (ConnectionError, ValueError) as error:
        raise UserError(f"--ray-address {address}: {(str(error).splitlines() or [type(error).__name__])[0]}") from None
    if threading.current_thread() is threading.main_thread():
        interrupt_on_signals()  # ray.init made SIGTERM exit at once; it stops the run like Ctrl-C again
    return True


def shutdown() -> None:
    import ray  # noqa: PLC0415

    ray.shutdown()


def _central_task(job: CentralJob, threads: int) -> tuple[int, list]:
    """One method run of the grid inside a Ray worker: its finished iterations and the GPUs Ray gave it."""
    import ray  # noqa: PLC0415

    set_cpu_threads(threads)
    return len(run_central_job(job)), [str(gpu) for gpu in ray.get_gpu_ids()]


def check_gpu_share(requested: float, cluster_gpus: float) -> None:
    """A task asking for more GPU than the whole cluster has would wait for ever: a one-line error instead."""
    if requested > cluster_gpus:
        raise UserError(f"--gpus-per-task {requested:g}: the Ray cluster has {cluster_gpus:g} GPU(s), so no run "
                        "could ever start; use a machine or cluster with GPUs, or leave the flag out")


def run_grid(jobs: list[CentralJob], threads: int, log: Callable[[str], None], gpus_per_task: float = 0.0) -> None:
    """Every job as a Ray task of one CPU (and `gpus_per_task` of a GPU: small models share one), all submitted
    at once; waits for all, then raises the first error (a UserError raised in a task stays one line)."""
    import ray  # noqa: PLC0415

    if gpus_per_task:
        check_gpu_share(gpus_per_task, ray.cluster_resources().get("GPU", 0.0))
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=1)(_central_task)
    pending = {task.remote(job, threads): job for job in jobs}
    errors = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
        for ref in ready:
            job = pending.pop(ref)
            name = f"{job.protocol.dataset} run{job.run} unsup{job.settings.unsupervised} {job.settings.method}"
            try:
                finished, gpus = ray.get(ref)
                log(f"[ray] {name}: {finished} iterations finished" + (f" (GPU {','.join(gpus)})" if gpus else ""))
            except ray.exceptions.RayError as error:
                cause = getattr(error, "cause", None)
                errors.append(UserError(str(cause)) if isinstance(cause, UserError) else error)
                log(f"[ray] {name}: failed ({type(cause or error).__name__})")
    if errors:
        raise errors[0]
