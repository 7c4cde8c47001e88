"""--executor lockstep (common/lockstep.py): a grid's runs advanced together, same-shaped models trained as one
batched model; the results are the local executor's up to float rounding (tiny: digits, LeNet, 2 epochs)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import planning
from common import lockstep, storage
from tests.conftest import FAST_FLAGS

GRID = [*FAST_FLAGS, "--dataset", "digits", "--runs", "2", "--iterations", "3", "--epochs", "2", "--threads", "1"]
METHODS = ("random", "entropy", "fk-nn", "var-ratio-mc")  # var-ratio-mc's dropout LeNets train one by one
RUN = Path("digits") / "ir10_val20"


def records(out: Path, run: int, method: str) -> list[dict]:
    return [json.loads(line) for line in (out / RUN / f"run{run}" / "unsup0" / method / "metrics.jsonl").read_text().splitlines()]


def lockstep_grid(out: Path, *flags: str, monkeypatch=None) -> list[int]:
    """Run the grid with --executor lockstep in this process; the model count of every batched training."""
    command = planning.parse(["--out", str(out), *GRID, "--methods", ",".join(METHODS), "--executor", "lockstep",
                              *flags])
    exp = planning.experiment(command)
    sizes: list[int] = []
    if monkeypatch is not None:
        real = lockstep.train_together

        def counted(models, *args, **kwargs):
            sizes.append(len(models))
            return real(models, *args, **kwargs)

        monkeypatch.setattr(lockstep, "train_together", counted)
    planning.run_central(command, exp)
    return sizes


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    command = planning.parse(["--out", str(out), *GRID, "--methods", ",".join(METHODS)])
    planning.run_central(command, planning.experiment(command))
    return out


def test_lockstep_equals_the_local_executor_and_batches_each_iteration(local_grid, tmp_path, monkeypatch):
    sizes = lockstep_grid(tmp_path, monkeypatch=monkeypatch)
    # 3 iterations, each one batched LeNet of 2 runs x 3 methods (var-ratio-mc's dropout LeNets train alone)
    assert sizes == [6, 6, 6]
    for run in (0, 1):
        for method in METHODS:
            local, together = records(local_grid, run, method), records(tmp_path, run, method)
            assert [r["labelled"] for r in together] == [r["labelled"] for r in local] == [10, 20, 30]
            for a, b in zip(local, together):
                assert abs(a["test_acc"] - b["test_acc"]) <= 0.01, (run, method, a["test_acc"], b["test_acc"])
            folder = f"run{run}/unsup0/{method}"
            for iteration in range(3):
                name = f"acquired_{iteration:03d}.npy"
                assert np.array_equal(storage.load_indices(local_grid / RUN / folder / name),
                                      storage.load_indices(tmp_path / RUN / folder / name)), (folder, name)
            weights = [torch.load(out / RUN / folder / "model_002.pt", weights_only=True)["states"][0]
                       for out in (local_grid, tmp_path)]
            assert max((weights[0][k].float() - weights[1][k].float()).abs().max().item() for k in weights[0]) < 1e-3


def test_lockstep_resumes_extends_and_skips_a_run_another_process_holds(local_grid, tmp_path):
    lockstep_grid(tmp_path, "--iterations", "2")
    held = tmp_path / RUN / "run1" / "unsup0" / "entropy"
    with storage.exclusive(held) as mine:  # another worker is on it: lockstep leaves it alone
        assert mine
        lockstep_grid(tmp_path)
    assert len(records(tmp_path, 1, "entropy")) == 2
    assert len(records(tmp_path, 0, "entropy")) == 3
    lockstep_grid(tmp_path)  # now it is free: extended from its second iteration
    for method in METHODS:
        assert [r["iteration"] for r in records(tmp_path, 1, method)] == [0, 1, 2]
        assert [r["labelled"] for r in records(tmp_path, 1, method)] == [r["labelled"] for r in records(local_grid, 1, method)]


def test_groups_hold_only_trainings_a_batched_model_can_take():
    from common.datasets import DATASETS
    from common.loop import Training

    import datasets_available  # noqa: F401

    spec = DATASETS.get("digits")
    train = spec.load(None, True)

    def training(count: int, mc_dropout: bool = False, schedule=spec.schedule) -> Training:
        torch.manual_seed(count)
        return Training([spec.model(spec.num_classes, mc_dropout)], train.images[:count], train.labels[:count],
                        schedule, spec.normalise, [count], torch.device("cpu"))

    waiting = {0: training(10), 1: training(20), 2: training(10), 3: training(10, schedule=spec.schedule.with_epochs(1))}
    assert sorted(lockstep.training_groups(waiting)) == [[0, 2], [1], [3]]
    waiting[4] = training(10, mc_dropout=True)  # dropout on: trained alone, the others still batched
    assert sorted(lockstep.training_groups(waiting)) == [[0, 2], [1], [3], [4]]
