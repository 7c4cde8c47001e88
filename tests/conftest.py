"""Shared fixtures: the repository root, the embedded digits data loaded once, and CLI runners.

The suite runs on 2 shared CPU cores: torch uses one thread here and in every subprocess, which
is faster under contention and keeps in-process and subprocess runs numerically identical.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; inherited by subprocesses

import runpy  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import datasets_available  # noqa: E402,F401  (registers every dataset)
from common.datasets import DATASETS  # noqa: E402
from common.experiment import DatasetArrays  # noqa: E402

torch.set_num_threads(1)

# Small, fast settings shared by the end-to-end tests; on the CPU so results are comparable everywhere.
FAST_FLAGS = ["--runs", "1", "--iterations", "2", "--budget", "10", "--epochs", "1", "--mc-samples", "3", "--quiet",
              "--vaal-steps", "10",
              "--device", "cpu"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def digits_spec():
    return DATASETS.get("digits")


@pytest.fixture(scope="session")
def digits_data(digits_spec) -> DatasetArrays:
    """The digits train and test splits, loaded once for the whole session."""
    return DatasetArrays(train=digits_spec.load(None, True), test=digits_spec.load(None, False))


@pytest.fixture
def digits_state(digits_data, digits_spec):
    """A factory of AcquisitionStates on real digits: the first `pool_size` training images are the pool,
    the next 100 the validation set (unless one is given); CPU, seeded by `seed`."""
    import numpy as np

    from common.datasets import Split
    from common.strategies import AcquisitionOptions, AcquisitionState

    images, labels = digits_data.train.images, digits_data.train.labels

    def make(model, unlabelled, budget, *, iteration=1, pool_size=300, validation=None, seed=0, **options):
        pool = Split(images=images[:pool_size], labels=labels[:pool_size])
        validation = validation or Split(images=images[pool_size:pool_size + 100],
                                         labels=labels[pool_size:pool_size + 100])
        return AcquisitionState(
            models=[model], to_input=digits_spec.normalise, pool=pool, unlabelled=unlabelled, validation=validation,
            iteration=iteration, budget=budget, rng=np.random.default_rng(seed), seed=seed,
            options=AcquisitionOptions(device=torch.device("cpu"), **options),
        )

    return make


@dataclass
class Result:
    """What a CLI run left behind, the same shape as subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python run.py ARGS` as a real subprocess in the repository root."""
    return subprocess.run(
        [sys.executable, "run.py", *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )


def run_script_in_process(script: str, args, monkeypatch, capsys) -> Result:
    """`python SCRIPT ARGS` executed in this process (the script's own __main__ block, no interpreter start).

    An exception other than SystemExit escapes to the test: that is the traceback a user would see.
    """
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    monkeypatch.chdir(REPO_ROOT)
    capsys.readouterr()
    code = 0
    try:
        runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    captured = capsys.readouterr()
    return Result(returncode=code, stdout=captured.out, stderr=captured.err)


@pytest.fixture
def run_main(monkeypatch, capsys):
    """`python run.py ARGS` executed in this process (see run_script_in_process)."""
    return lambda *args: run_script_in_process("run.py", args, monkeypatch, capsys)


def assert_one_line_error(result) -> str:
    """A user error: non-zero exit, exactly one non-empty stderr line, no traceback anywhere."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, f"expected failure, got rc 0; stderr: {result.stderr}"
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{result.stderr}"
    assert "error" in lines[0].lower()
    return lines[0]


def planned_asynchronous_run(out, *flags):
    """`run.py --out OUT FLAGS` planned as its one asynchronous run: (RunContext, AsyncJob, Experiment)."""
    import planning  # noqa: PLC0415

    command = planning.parse(["--out", str(out), *flags])
    exp = planning.experiment(command)
    (ctx, job), = planning.asynchronous_jobs(command, exp)
    return ctx, job, exp


def flower_processes() -> str:
    """Flower daemons and app processes running now, one `pid ppid state etime command` line each ("" when
    none). A zombie (state Z) has exited: here it waits only for a PID 1 that may never reap it."""
    pids = subprocess.run(["pgrep", "-f", "flower-superlink|flower-supernode|flower-superexec|flwr-serverapp"],
                          capture_output=True, text=True).stdout.split()
    if not pids:
        return ""
    listing = subprocess.run(["ps", "-o", "pid=,ppid=,stat=,etime=,args=", "-p", ",".join(pids)],
                             capture_output=True, text=True).stdout.splitlines()
    return "\n".join(line for line in listing if not line.split()[2].startswith("Z"))
