"""Run federated jobs in Flower's simulation engine on this machine (Ray underneath, sized for small
machines: one CPU per client worker at most, a small object store, no dashboard)."""
from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common.experiment import dataset_arrays
from common.errors import UserError
from federated.task import Job

OBJECT_STORE_BYTES = 128 * 1024 * 1024
STOP_SECONDS = 60.0  # how long a stopped run waits for the server to finish the computation it is in


def backend_config(clients: int) -> dict:
    """One client worker per core (each holds torch and a copy of the dataset, about 1 GB; the
    clients of a round take turns on them), never more workers than clients."""
    cores = os.cpu_count() or 1
    per_client = max(1.0, cores / max(clients, 1))
    return {"client_resources": {"num_cpus": per_client, "num_gpus": 0.0},
            "init_args": {"num_cpus": cores, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False,
                          "log_to_driver": False}}


def run_jobs(jobs: list[Job], out: Path, log: Callable[[str], None] = print, verbose: bool = False) -> None:
    """Run every job (all with the same number of clients) in one Flower simulation; errors raised on
    the server come back here (a UserError stays one line)."""
    jobs = unfinished(jobs, out, log)  # finished runs are checked here, without starting Flower
    if not jobs:
        return
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")  # a stop signal is ours to report, in one line
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.simulation import run_simulation  # noqa: PLC0415  (imports Ray: only when federated runs are asked)

    from federated.client_app import app as client_app  # noqa: PLC0415
    from federated.server_app import make_server_app  # noqa: PLC0415

    from federated.grid import Interrupted, Stop  # noqa: PLC0415

    if not verbose:  # Flower warns about its own deprecations and skipped evaluation; our lines say what ran
        logging.getLogger("flwr").setLevel(logging.ERROR)
    errors: list[BaseException] = []
    stop, server_done = Stop(), threading.Event()
    server_app = make_server_app(jobs, out, dataset_arrays, log, errors, verbose, stop, server_done)
    try:
        with stopping_on_signals(stop):
            run_simulation(server_app=server_app, client_app=client_app, num_supernodes=jobs[0].federation.clients,
                           backend_config=backend_config(jobs[0].federation.clients), verbose_logging=verbose)
    except (KeyboardInterrupt, SystemExit) as signalled:
        if isinstance(signalled, SystemExit) and signalled.code != signal.SIGTERM:
            raise
        silence_flower()
        stop.set()  # Ray's own SIGTERM handler (sys.exit(15)) bypassed ours: stop the server here
        server_done.wait(STOP_SECONDS)
        _stop_ray()
        raise KeyboardInterrupt from None
    if any(isinstance(error, Interrupted) for error in errors):
        raise KeyboardInterrupt
    if errors:
        raise errors[0]
    if not all(_finished(job, out) for job in jobs):
        raise UserError("the federated simulation ended before every run finished (see the log above)")


@contextmanager
def stopping_on_signals(stop) -> Iterator[None]:
    """While the simulation runs, SIGINT and SIGTERM first stop the server (no write after the signal),
    then interrupt the main thread (Flower's runtime and its Ray actors wind down)."""

    def handler(_signal: int, _frame) -> None:
        silence_flower()
        stop.set()
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def silence_flower() -> None:
    """After a stop signal, Flower's threads log the deaths of the Ray actors being shut down as ERROR
    tracebacks; the interruption is ours to report, in one line, so Flower says nothing more in this
    process (which is ending)."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL + 1)


def _stop_ray() -> None:
    """Flower shuts its Ray down when its runtime ends; after an interrupt make sure of it."""
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        ray.shutdown()


def unfinished(jobs: list[Job], out: Path, log: Callable[[str], None]) -> list[Job]:
    """The jobs whose runs are not finished; every file of a finished run is checked (a damaged one is a
    UserError naming it)."""
    from federated.server_app import FederatedRun  # noqa: PLC0415

    return [job for job in jobs if FederatedRun(job, None, {}, out, dataset_arrays(job.dataset, job.data_root),
                                                log).finished_and_checked() is None]


def _finished(job: Job, out: Path) -> bool:
    from common.method_run import finished_records  # noqa: PLC0415

    return len(finished_records(job.method_folder(out))) >= job.cycles
