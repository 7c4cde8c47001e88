"""The fair-comparison benchmark's grid (every cell a valid run.py command, tiers in order, run by run)
and its report (decision tables from a small results tree whose numbers are known)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import fair_comparison
from benchmarks.fair_report import budgets_with_points, write_report
from common.reporting import Curve
from common.strategies import STRATEGIES
from conftest import REPO_ROOT, assert_one_line_error
from run import get_args_parser


def test_every_cell_is_a_valid_run_py_command():
    parser = get_args_parser()
    for cell in fair_comparison.grid():
        args = parser.parse_args(cell.command(Path("/tmp/out"), 0)[2:])
        assert args.dataset == "fashion-mnist" and (args.run_start, args.run_stop) == (0, 1)
        for method in args.methods:
            if method != "all-train":
                strategy = STRATEGIES.get(method)
                assert not (args.train_on_validation and strategy.held_out_folds), cell.name


def test_grid_covers_every_method_at_every_validation_size_with_and_without_trainval():
    parser = get_args_parser()
    covered = set()
    for cell in fair_comparison.grid():
        args = parser.parse_args(cell.command(Path("/tmp/out"), 0)[2:])
        if args.imbalance == [100.0] and args.minority_classes is None:
            for method in args.methods:
                covered.add((args.val_per_class, method, args.train_on_validation, tuple(args.unsupervised)))
    for val in (10, 50, 100, 1000):
        for method in ("random", "entropy", "var-ratio-mc", "badge", "fk-nn"):
            assert {(val, method, False, (0,)), (val, method, True, (0,))} <= covered, (val, method)
        for method in ("fk-nn-split", "fk-nn-kfold"):
            assert (val, method, False, (0,)) in covered
    for method in ("random", "entropy", "badge", "fk-nn"):  # the rotation start, with and without trainval
        assert {(100, method, False, (1,)), (100, method, True, (1,))} <= covered, method
    assert (100, "fk-nn-split", False, (1,)) in covered
    for method in ("random", "entropy", "coreset", "badge", "var-ratio-mc", "fk-nn-kfold", "fk-nn-split", "typiclust",
                   "probcover", "direct"):  # the cold start: no validation set given
        assert (0, method, False, (0,)) in covered, method
    for val in (10, 50, 100):  # the 2022-2025 baselines in the decision-table cells
        for method in ("typiclust", "probcover", "direct"):
            assert {(val, method, False, (0,)), (val, method, True, (0,))} <= covered, (val, method)


def test_jobs_go_tier_by_tier_and_run_by_run():
    cells = fair_comparison.grid()
    jobs = fair_comparison.jobs(cells, None)
    tiers = [cell.tier for cell, _ in jobs]
    assert tiers == sorted(tiers)
    first_tier = [(cell.name, run) for cell, run in jobs if cell.tier == 1]
    runs = [run for _, run in first_tier]
    assert runs == sorted(runs)  # every tier-1 cell's run 0 before any run 1
    assert len(first_tier) == fair_comparison.RUNS * sum(c.tier == 1 for c in cells)
    assert {c.tier for c, _ in fair_comparison.jobs(cells, {2})} == {2}
    assert all(run < cell.runs for cell, run in jobs)


def test_named_cells_run_alone_in_grid_order():
    cells = fair_comparison.grid()
    chosen = fair_comparison.jobs(cells, None, 3, {"rotation-start", "val10"})
    assert [(cell.name, run) for cell, run in chosen] == [
        ("val10", 0), ("val10", 1), ("val10", 2), ("rotation-start", 0), ("rotation-start", 1), ("rotation-start", 2)]
    assert fair_comparison.jobs(cells, {1}, 5, {"rotation-start"}) == []  # a tier-3 cell is not in tier 1


def write_run(out: Path, folder: str, method: str, run: int, points: list[tuple[int, int, float]], **fields) -> None:
    path = out / "fashion-mnist" / folder / f"run{run}" / "unsup0" / method.replace("@", "+") / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for iteration, (labelled, validation, accuracy) in enumerate(points):
        lines.append(json.dumps({
            "dataset": "fashion-mnist", "imbalance": 100.0, "val_per_class": int(folder.split("val")[1].split("_")[0]),
            "unsupervised": 0, "method": method.split("@")[0], "run": run, "seed": run, "iteration": iteration,
            "labelled": labelled, "validation_labels": validation, "test_acc": accuracy, "balanced_acc": accuracy,
            "minority_acc": accuracy - 0.1, "class_acc": [accuracy] * 10, "acquire_seconds": 0.0,
            "train_seconds": 0.0, "train_on_validation": method.endswith("@trainval"), **fields}))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def results_tree(tmp_path):
    out = tmp_path / "bench"
    for run, wobble in ((0, -0.01), (1, 0.01)):
        write_run(out, "ir100_val10", "entropy", run, [(125, 0, 0.40 + wobble), (250, 0, 0.50 + wobble)])
        write_run(out, "ir100_val10", "entropy@trainval", run, [(125, 100, 0.70 + wobble), (250, 100, 0.72 + wobble)])
        write_run(out, "ir100_val10", "fk-nn-kfold", run, [(125, 100, 0.69 + wobble), (250, 100, 0.76 + wobble)])
        write_run(out, "ir100_val10_min2-4-6", "fk-nn", run, [(125, 100, 0.6), (250, 100, 0.7)],
                  minority_set="min2-4-6")
        # the cold start: no validation set; the best curve above would win any table it shared
        write_run(out, "ir100_val0", "random", run, [(250, 0, 0.45 + wobble), (500, 0, 0.55 + wobble)])
        write_run(out, "ir100_val0", "fk-nn-kfold", run, [(250, 0, 0.50 + wobble), (500, 0, 0.65 + wobble)])
        # a larger validation set: its curves start where the 10-per-class ones end
        write_run(out, "ir100_val100", "entropy@trainval", run, [(125, 1000, 0.80 + wobble), (250, 1000, 0.82 + wobble)])
    return out


def test_report_decides_per_total_budget(results_tree, tmp_path):
    path = write_report(results_tree, tmp_path / "docs", tmp_path / "results" / "fair.md")
    text = path.read_text()
    balanced = text.split("### balanced accuracy: imbalance 100, random start\n")[1].split("###")[0]
    rows = [line for line in balanced.splitlines() if line.startswith("| 2") or line.startswith("| 5")]
    # at 250 total labels: entropy+trainval's 0.70 at 225 beats fk-nn-kfold's 0.69 (gap 0.01 / 0.01 = 1 std)
    assert rows[0].startswith("| 250 | entropy+trainval (val 10/class): 0.700 ± 0.010 at 225 (2 runs) | "
                              "fk-nn-kfold (val 10/class): 0.690 ± 0.010 at 225 (2 runs) | 1.0 |")
    # at 500: fk-nn-kfold's 0.76 at 350 wins; it reaches entropy+trainval's 0.72 with 225 + 125 * 0.03 / 0.07
    assert rows[1].startswith("| 500 | fk-nn-kfold (val 10/class): 0.760 ± 0.010 at 350 (2 runs) |")
    assert "| 279 (20% fewer) |" in rows[1]
    assert "min2-4-6" in text  # the chosen minority set gets its own tables
    assert "val 0/class" not in balanced  # the cold start is not mixed into the given-validation table
    cold = text.split("### balanced accuracy: imbalance 100, random start, cold start (no validation set given")[1]
    cold_rows = [line for line in cold.split("###")[0].splitlines() if line.startswith("| 250") or line.startswith("| 500")]
    assert cold_rows[0].startswith("| 250 | fk-nn-kfold (val 0/class): 0.500 ± 0.010 at 250 (2 runs) | "
                                   "random (val 0/class): 0.450 ± 0.010 at 250 (2 runs) |")
    assert cold_rows[1].startswith("| 500 | fk-nn-kfold (val 0/class): 0.650 ± 0.010 at 500 (2 runs) |")
    assert "| imbalance 100, random start | 10 | entropy 2 (2), entropy+trainval 2 (2), fk-nn-kfold 2 (2) |" in text
    assert (tmp_path / "docs" / "savings_ir100_val10_unsup0.md").exists()


def test_report_scores_aubc_within_each_label_range(results_tree, tmp_path):
    """Curves cover different label totals (a method that reads 1000 validation labels starts at 1125, one that
    never reads them at 125), so AUBC tables and win matrices go per validation size and per whether the
    method read the set, each over the range its curves share."""
    text = write_report(results_tree, tmp_path / "docs", tmp_path / "results" / "fair.md").read_text()
    balanced = text.split("### balanced accuracy: imbalance 100, random start\n")[1].split("\n### ")[0]

    def group(title):
        return balanced.split(f"#### {title}\n")[1].split("####")[0]

    read_small, unread_small = group("validation 10/class, methods that read it"), group(
        "validation 10/class, methods that never read it")
    read_large = group("validation 100/class, methods that read it")
    assert "225 to 350 labels" in read_small and "125 to 250 labels" in unread_small
    assert "1125 to 1250 labels" in read_large
    # entropy+trainval at 10/class: (0.70 + 0.72) / 2 on average over the two runs (wobble +-0.01)
    assert "| entropy+trainval (val 10/class) | 0.7100 ± 0.0100 | 2 |" in read_small
    assert "| entropy (val 10/class) | 0.4500 ± 0.0100 | 2 |" in unread_small
    assert "| entropy+trainval (val 100/class) | 0.8100 ± 0.0100 | 2 |" in read_large
    assert "(val 100/class)" not in read_small and "entropy+trainval" not in unread_small
    assert balanced.count("Pairwise wins on balanced accuracy") == 3
    cold = text.split("cold start (no validation set given")[1].split("\n### ")[0]
    assert "#### no validation set\n" in cold and "250 to 500 labels" in cold


@pytest.mark.parametrize("args, expected", [
    (["--workers", "0"], "--workers"), (["--runs", "-1"], "--runs"), (["--tier", "x"], "--tier"),
    (["--report-only", "--out", "{tmp}"], "no results under"), (["--cell", "val7", "--out", "{tmp}"], "no cell named 'val7'"),
    (["--tier", "1", "--cell", "all-train", "--out", "{tmp}"], "no job matches"),
])
def test_bad_input_is_one_line_error(tmp_path, args, expected):
    command = [sys.executable, "benchmarks/fair_comparison.py", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert expected in assert_one_line_error(result)
    assert not (tmp_path / "fashion-mnist").exists()


def test_decision_rows_only_for_budgets_some_curve_reaches():
    """A protocol whose curves end at 2000 labels gets no 11 000 row repeating its 2000 row; one with
    1000-per-class curves (10 125-11 000 labels) does; a budget between two points gets none."""
    def curve(*labels: int) -> Curve:
        x = np.array(labels, dtype=float)
        return Curve(x, np.full_like(x, 0.5), np.zeros_like(x), np.ones_like(x, dtype=int))

    small = {(10, "entropy"): curve(225, 350, 1000), (100, "fk-nn"): curve(1125, 2000)}
    assert budgets_with_points(small, (250, 500, 1000, 2000, 11_000)) == [250, 500, 1000, 2000]
    with_large = {**small, (1000, "fk-nn"): curve(10_125, 11_000)}
    assert budgets_with_points(with_large, (250, 500, 1000, 2000, 11_000)) == [250, 500, 1000, 2000, 11_000]
    assert budgets_with_points({(10, "random"): curve(225, 900)}, (250, 500, 1000)) == [250, 1000]
