"""benchmarks/minority_picks.py: the share of minority-class images among each method's pool picks."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from conftest import REPO_ROOT, assert_one_line_error
from benchmarks.minority_picks import minority_share, picks_markdown, share_rows

MINORITY = [5, 6, 7, 8, 9]


def test_minority_share_counts_the_picked_minority_labels():
    labels = np.array([0, 5, 1, 9, 2, 7])
    assert minority_share(labels, np.array([1, 3, 0, 2]), MINORITY) == 0.5
    assert minority_share(labels, np.array([0, 2, 4]), MINORITY) == 0.0
    assert np.isnan(minority_share(labels, np.array([], dtype=int), MINORITY))


def write_method(out, run: int, method: str, picks: list[np.ndarray], pool: np.ndarray) -> None:
    run_folder = out / "digits" / "ir10_val20" / f"run{run}"
    folder = run_folder / "unsup0" / method
    folder.mkdir(parents=True)
    np.savez(run_folder / "split.npz", val_indices=np.arange(3), pool_indices=pool)
    for iteration, indices in enumerate(picks):
        np.save(folder / f"acquired_{iteration:03d}.npy", indices.astype(np.int64))
    (folder / "metrics.jsonl").write_text(json.dumps({"minority_classes": MINORITY, "run": run}) + "\n")


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
        (folder / "metrics.jsonl").write_text(json.dumps({"minority_classes": MINORITY}) + "\n")
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


def test_no_results_is_one_line_error(tmp_path):
    command = [sys.executable, "benchmarks/minority_picks.py", "--out", str(tmp_path), "--results", str(tmp_path / "x.md")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert "no results under" in assert_one_line_error(result)
    assert not (tmp_path / "x.md").exists()
