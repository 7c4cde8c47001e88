"""Active-learning experiments on biased pools, central, federated or asynchronous (`--help`, docs/usage.md).

With no arguments: a small complete experiment on scikit-learn's embedded digits (offline). The flags,
what they mean and the plan of runs they ask for live in planning.py; this entry point only parses and
starts the runs of the command's mode.
"""
from __future__ import annotations

from common.cli import exit_quietly_on_interrupt

if __name__ == "__main__":
    exit_quietly_on_interrupt()  # before the heavy imports: Ctrl-C while importing is one line too

import argparse
import time

import planning
from common.cli import run_main
from planning import get_args_parser  # noqa: F401  (run.py's parser: docs/make_cli.py, the tests)


def main(args: argparse.Namespace) -> None:
    command = planning.command_from(vars(args))
    exp = planning.experiment(command)
    started = time.perf_counter()
    if command.mode == "federated":
        from federated.simulation import run_jobs  # noqa: PLC0415  (Flower and Ray load only for federated runs)

        run_jobs(planning.federated_jobs(command, exp), command.out, exp.log)
    elif command.mode == "asynchronous":
        from asynchronous.experiment import run_jobs  # noqa: PLC0415

        run_jobs(planning.asynchronous_jobs(command, exp), exp.options, command.ray_address)
    elif command.initial:
        planning.make_initial_models(command, exp)
    else:
        planning.run_central(command, exp)
    exp.log(f"done in {time.perf_counter() - started:.0f}s; results under {command.out / exp.spec.name}; "
            f"plot them with: python run_plot.py --dataset {exp.spec.name} --out {command.out}")


if __name__ == "__main__":
    run_main(main, get_args_parser())
