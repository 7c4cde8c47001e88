"""End-to-end `python run.py` runs on digits (and a tiny idx dataset): every method, determinism,
--unsupervised 1 with --ensemble 2, --initial, and the results contract (docs/method.md#results-contract)."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from common.strategies import STRATEGIES
from conftest import FAST_FLAGS, run_cli

ALL_METHODS = STRATEGIES.names()
BUDGET, ITERATIONS = 10, 2
REQUIRED_FIELDS = {
    "dataset", "imbalance", "run", "seed", "method", "unsupervised", "iteration", "labelled", "test_acc",
    "balanced_acc", "minority_acc", "class_acc", "acquire_seconds", "train_seconds",
}


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def find_method_folder(out: Path, method: str, dataset: str = "digits", unsupervised: int = 0, run: int = 0) -> Path:
    """The one folder under <out>/<dataset>/ holding `method`'s metrics.jsonl for that run and start."""
    found = [
        path.parent for path in (out / dataset).glob(f"**/unsup{unsupervised}/{method}/metrics.jsonl")
        if f"run{run}" in path.parts
    ]
    assert len(found) == 1, f"expected one {method} results folder under {out / dataset}, found {found}"
    return found[0]


def find_initial_folder(out: Path, run: int, dataset: str = "digits") -> Path:
    found = [path for path in (out / dataset).glob(f"**/run{run}/initial") if path.is_dir()]
    assert len(found) == 1, f"expected one initial/ folder for run{run}, found {found}"
    return found[0]


def check_method_folder(folder: Path, method: str, unsupervised: int = 0, seed: int = 0, run: int = 0,
                        imbalance: float = 10.0, dataset: str = "digits", budget: int = BUDGET,
                        iterations: int = ITERATIONS, minority: tuple[int, ...] = (5, 6, 7, 8, 9)) -> list[np.ndarray]:
    records = read_metrics(folder / "metrics.jsonl")
    assert len(records) == iterations
    for b, record in enumerate(records):
        assert REQUIRED_FIELDS <= set(record), REQUIRED_FIELDS - set(record)
        assert record["dataset"] == dataset and record["method"] == method
        assert record["imbalance"] == imbalance and record["run"] == run and record["seed"] == seed
        assert record["unsupervised"] == unsupervised and record["iteration"] == b
        assert record["labelled"] == budget * (b + 1)
        for key in ("test_acc", "balanced_acc", "minority_acc"):
            assert 0.0 <= record[key] <= 1.0, (key, record[key])
        assert len(record["class_acc"]) == 10 and all(0.0 <= a <= 1.0 for a in record["class_acc"])
        assert math.isclose(record["balanced_acc"], np.mean(record["class_acc"]), rel_tol=1e-9)
        assert math.isclose(record["minority_acc"], np.mean([record["class_acc"][c] for c in minority]), rel_tol=1e-9)
        assert record["acquire_seconds"] >= 0 and record["train_seconds"] >= 0
    picks = [np.load(folder / f"acquired_{b:03d}.npy") for b in range(iterations)]
    for chosen in picks:
        assert len(chosen) == budget and len(np.unique(chosen)) == budget
    assert len(np.unique(np.concatenate(picks))) == budget * iterations  # disjoint across iterations
    split = np.load(folder.parents[1] / "split.npz")  # <run folder>/unsup<U>/<method>
    assert np.isin(np.concatenate(picks), split["pool_indices"]).all()
    return picks


@pytest.fixture(scope="module")
def all_methods_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("all_methods")
    result = run_cli("--out", out, "--methods", ",".join(ALL_METHODS), *FAST_FLAGS)
    return out, result


def test_all_methods_run_exits_cleanly(all_methods_run):
    _, result = all_methods_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == ""  # --quiet


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_writes_the_results_contract(all_methods_run, method):
    out, result = all_methods_run
    assert result.returncode == 0, result.stderr
    check_method_folder(find_method_folder(out, method), method)


def test_same_seed_same_selections_in_different_out_dirs(all_methods_run, run_main, tmp_path):
    """The subprocess run above and an in-process rerun into another --out pick the same images."""
    out, result = all_methods_run
    assert result.returncode == 0, result.stderr
    methods = ["random", "entropy", "fk-nn"]
    again = run_main("--out", tmp_path, "--methods", ",".join(methods), *FAST_FLAGS)
    assert again.returncode == 0, again.stderr
    for method in methods:
        folders = [find_method_folder(out, method), find_method_folder(tmp_path, method)]
        picks = [check_method_folder(folder, method) for folder in folders]
        for a, b in zip(*picks, strict=True):
            np.testing.assert_array_equal(a, b)
        accuracies = [[r["test_acc"] for r in read_metrics(f / "metrics.jsonl")] for f in folders]
        assert accuracies[0] == accuracies[1]


def test_different_seed_different_selections(all_methods_run, run_main, tmp_path):
    out, _ = all_methods_run
    result = run_main("--out", tmp_path, "--methods", "random,fk-nn", "--seed", "1", *FAST_FLAGS)
    assert result.returncode == 0, result.stderr
    for method in ("random", "fk-nn"):
        check_method_folder(find_method_folder(tmp_path, method), method, seed=1)
        seed0 = np.load(find_method_folder(out, method) / "acquired_000.npy")
        seed1 = np.load(find_method_folder(tmp_path, method) / "acquired_000.npy")
        assert not np.array_equal(seed0, seed1)


# class 0 alone is the majority and ir 100 leaves one minority image: a pool of about 120 images and
# 50 validation images, so the 8 epochs of rotation pretraining stay quick
SMALL_POOL = ["--val-per-class", "5", "--minority-classes", "1,2,3,4,5,6,7,8,9", "--imbalance", "100"]


def test_initial_creates_both_models_per_run_then_unsupervised_ensemble_run(run_main, tmp_path):
    initial = run_main("--out", tmp_path, "--initial", "--runs", "2", "--quiet", "--device", "cpu", *SMALL_POOL)
    assert initial.returncode == 0, initial.stderr
    for run in (0, 1):
        folder = find_initial_folder(tmp_path, run)
        assert sorted(p.name for p in folder.glob("*.pt")) == ["random_m0.pt", "rotation_m0.pt"]
        rotation = torch.load(folder / "rotation_m0.pt", weights_only=True)
        assert 0.0 <= rotation["rotation_accuracy"] <= 1.0
        assert not list(folder.parent.glob("unsup*"))  # --initial only creates the initial models
    run0 = find_initial_folder(tmp_path, 0).parent
    rotation_before = (run0 / "initial" / "rotation_m0.pt").read_bytes()
    seeds = [torch.load(find_initial_folder(tmp_path, r) / "random_m0.pt", weights_only=True)["state"] for r in (0, 1)]
    assert not torch.equal(seeds[0]["conv1.0.weight"], seeds[1]["conv1.0.weight"])  # run r uses seed + r

    al = run_main("--out", tmp_path, "--methods", "bald-mc", "--unsupervised", "1", "--ensemble", "2", *FAST_FLAGS,
                  *SMALL_POOL)
    assert al.returncode == 0, al.stderr
    # the missing ensemble member's initial models were created, the existing one kept
    assert (run0 / "initial" / "rotation_m1.pt").exists() and (run0 / "initial" / "random_m1.pt").exists()
    assert (run0 / "initial" / "rotation_m0.pt").read_bytes() == rotation_before
    folder = find_method_folder(tmp_path, "bald-mc", unsupervised=1)
    assert folder.parents[1] == run0
    check_method_folder(folder, "bald-mc", unsupervised=1, imbalance=100.0, minority=tuple(range(1, 10)))
    assert all(r["ensemble"] == 2 for r in read_metrics(folder / "metrics.jsonl"))
    model = torch.load(folder / "model_001.pt", weights_only=True)
    assert len(model["states"]) == 2
    assert not torch.equal(model["states"][0]["conv1.0.weight"], model["states"][1]["conv1.0.weight"])
    assert not (run0 / "unsup0").exists()


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = lambda array: bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header(images) + images.tobytes()))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header(labels) + labels.tobytes()))


def test_mnist_from_idx_files_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "MNIST" / "raw"
    _write_idx(raw, "train", rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), (np.arange(60) % 10).astype(np.uint8))
    _write_idx(raw, "t10k", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), (np.arange(20) % 10).astype(np.uint8))
    result = run_cli("--dataset", "mnist", "--data-root", tmp_path / "data", "--out", tmp_path / "out",
                     "--imbalance", "1", "--val-per-class", "2", "--methods", "fk-nn,margin", "--runs", "1",
                     "--iterations", "2", "--budget", "5", "--epochs", "1", "--quiet", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for method in ("fk-nn", "margin"):
        check_method_folder(find_method_folder(tmp_path / "out", method, dataset="mnist"), method,
                            imbalance=1.0, dataset="mnist", budget=5)
