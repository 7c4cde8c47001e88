"""The Flower app for deployments (`flwr run`): the same server and client as the simulation.

pyproject.toml names these components. The run config holds one key, `args`: a run.py command line
(`--dataset ... --clients N --methods ...`), parsed and checked by run.py's own parser (planning.py), so a
deployed run and `python run.py` mean the same thing and write the same results under `--out` on the
SuperLink's machine. Override it per run with `flwr run . NAME --run-config 'args="..."'`.
Each SuperNode is started with `--node-config "partition-id=P num-partitions=N"` (and optionally
`data-root="/path"` where its dataset lives).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

import planning
from common.errors import UserError
from federated import client_app
from federated.server_app import serve
from federated.simulation import dataset_arrays

client = client_app.app  # the ClientApp component
server = ServerApp()  # the ServerApp component


@server.main()
def main(grid: Grid, context: Context) -> None:
    """Run the command line of the run config; a user error is also printed as run.py's one line (the
    deployment tool reports it and exits non-zero), then raised so that Flower marks the run failed."""
    command = planning.parse(shlex.split(str(context.run_config.get("args", ""))))
    try:
        exp = planning.experiment(command)
        serve(grid, planning.federated_jobs(command, exp), Path(command.out), dataset_arrays, exp.log,
              verbose=not command.quiet)
    except UserError as error:
        print(f"run.py: error: {error}", flush=True)
        raise
