"""Run federated jobs in Flower's simulation engine on this machine (Ray underneath, sized for small
machines: one CPU per client worker at most, a small object store, no dashboard)."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from common.experiment import dataset_arrays
from common.errors import UserError
from federated.task import Job

OBJECT_STORE_BYTES = 128 * 1024 * 1024


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
    if not jobs:
        return
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.simulation import run_simulation  # noqa: PLC0415  (imports Ray: only when federated runs are asked)

    from federated.client_app import app as client_app  # noqa: PLC0415
    from federated.server_app import make_server_app  # noqa: PLC0415

    if not verbose:  # Flower warns about its own deprecations and skipped evaluation; our lines say what ran
        logging.getLogger("flwr").setLevel(logging.ERROR)
    errors: list[BaseException] = []
    server_app = make_server_app(jobs, out, dataset_arrays, log, errors, verbose)
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=jobs[0].federation.clients,
                   backend_config=backend_config(jobs[0].federation.clients), verbose_logging=verbose)
    if errors:
        raise errors[0]
    if not all(_finished(job, out) for job in jobs):
        raise UserError("the federated simulation ended before every run finished (see the log above)")


def _finished(job: Job, out: Path) -> bool:
    from common.experiment import finished_records, run_folder  # noqa: PLC0415
    from federated.server_app import method_label  # noqa: PLC0415

    folder = run_folder(out, job.dataset, job.protocol.imbalance, job.protocol.val_per_class, job.run,
                        job.protocol.variant) / f"unsup{job.unsupervised}" / method_label(job)
    return len(finished_records(folder)) >= job.cycles
