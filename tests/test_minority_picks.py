"""benchmarks/minority_picks.py: the share of minority-class images among each method's pool picks."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, assert_one_line_error
from benchmarks.minority_picks import minority_share, picks_markdown, share_rows

MINORITY = [5, 6, 7, 8, 9]


def test_minority_share_counts_the_picked_minority_labels():
    labels = np.array([0, 5, 1, 9, 2, 7])
    assert minority_share(labels, np.array([1, 3, 0, 2]), MINORITY) == 0.5
    assert minority_share(labels, np.array([0, 2, 4]), MINORITY) == 0.0
    assert np.isnan(minority_share(labels, np.array([], dtype=int), MINORITY))


def metrics_line(run: int, method: str) -> str:
    """A results-contract record (docs/method.md#metrics-records) naming the minority classes."""
    return json.dumps({
        "dataset": "digits", "imbalance": 10.0, "val_per_class": 20, "unsupervised": 0, "method": method,
        "run": run, "seed": run, "iteration": 0, "labelled": 8, "validation_labels": 0, "test_acc": 0.5,
        "minority_acc": 0.5, "balanced_acc": 0.5, "class_acc": [0.5] * 10, "acquire_seconds": 0.0,
        "train_seconds": 0.0, "train_on_validation": False, "minority_classes": MINORITY}) + "\n"


def write_method(out, run: int, method: str, picks: list[np.ndarray], pool: np.ndarray) -> None:
    run_folder = out / "digits" / "ir10_val20" / f"run{run}"
    folder = run_folder / "unsup0" / method
    folder.mkdir(parents=True)
    np.savez(run_folder / "split.npz", val_indices=np.arange(3), pool_indices=pool)
    for iteration, indices in enumerate(picks):
        np.save(folder / f"acquired_{iteration:03d}.npy", indices.astype(np.int64))
    (folder / "metrics.jsonl").write_text(metrics_line(run, method))


def test_a_planted_tree_gives_each_method_its_share_over_runs(tmp_path):
    import datasets_available  # noqa: F401  (registers digits)
    from common.experiment import dataset_arrays

    labels = dataset_arrays("digits", None).train.labels.numpy()  # what the command reads
    minority, majority = np.flatnonzero(labels >= 5), np.flatnonzero(labels < 5)
    pool = np.concatenate([majority[:90], minority[:10]])  # 10% minority
    out = tmp_path / "bench"
    # "finder": 4 of 8 picks minority in run 0, 2 of 8 in run 1; "diluter": none, in both runs
    write_method(out, 0, "finder", [minority[:2], majority[:2], minority[2:4], majority[2:4]], pool)
    write_method(out, 1, "finder", [minority[:2], majority[:6]], pool)
    for run in (0, 1):
        folder = out / "digits" / "ir10_val20" / f"run{run}" / "unsup0" / "diluter"
        folder.mkdir(parents=True)
        np.save(folder / "acquired_000.npy", majority[10:18].astype(np.int64))
        (folder / "metrics.jsonl").write_text(metrics_line(run, "diluter"))
    shares = share_rows(out / "digits", labels)
    assert shares[("ir10_val20, unsup0", "finder")] == [0.5, 0.25]
    assert shares[("ir10_val20, unsup0", "diluter")] == [0.0, 0.0]
    assert shares[("ir10_val20, unsup0", "pool")] == [0.1, 0.1]
    text = picks_markdown(shares)
    rows = [line for line in text.splitlines() if line.startswith("| ir10")]
    assert rows == ["| ir10_val20, unsup0 | pool | 0.100 ± 0.000 | 2 |",
                    "| ir10_val20, unsup0 | diluter | 0.000 ± 0.000 | 2 |",
                    "| ir10_val20, unsup0 | finder | 0.375 ± 0.125 | 2 |"]

    results = tmp_path / "picks.md"
    command = [sys.executable, "benchmarks/minority_picks.py", "--out", str(out), "--dataset", "digits",
               "--results", str(results)]
    ran = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert results.read_text() == text


@pytest.mark.parametrize("content, expected", [
    ("not json\n", "corrupted results file"),
    ('{"run": 0}\n', "invalid results file"),
    (None, "names no minority_classes"),
])
def test_a_bad_metrics_file_is_one_line_error(tmp_path, content, expected):
    folder = tmp_path / "digits" / "ir10_val20" / "run0" / "unsup0" / "m"
    folder.mkdir(parents=True)
    line = content if content is not None else metrics_line(0, "m").replace(', "minority_classes": [5, 6, 7, 8, 9]', "")
    (folder / "metrics.jsonl").write_text(line)
    command = [sys.executable, "benchmarks/minority_picks.py", "--out", str(tmp_path), "--dataset", "digits",
               "--results", str(tmp_path / "x.md")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert expected in assert_one_line_error(result)
    assert not (tmp_path / "x.md").exists()


def test_no_results_is_one_line_error(tmp_path):
    command = [sys.executable, "benchmarks/minority_picks.py", "--out", str(tmp_path), "--results", str(tmp_path / "x.md")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert "no results under" in assert_one_line_error(result)
    assert not (tmp_path / "x.md").exists()
