"""Reporting: curve aggregation, labels-to-reach and label savings, confusion matrices, file names,
and run_plot.py on small synthetic results trees whose numbers are known in advance."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, assert_one_line_error
from common.methods import ALL_TRAIN, READS_VALIDATION, base_method, is_reference
from common.records import metrics_problem
from common.reporting import (
    Curve, Standing, aggregate, confusion_matrix, decide, decision_markdown, gap_in_std, is_baseline,
    label_savings, labels_to_reach, load_records, method_label, safe_name, savings_markdown, setting_key, standings,
    uses_validation_labels,
)

SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")
X = [100, 200, 300]


def record(method: str, run: int, iteration: int, labelled: int, test_acc: float, *, validation_labels: int = 0,
           imbalance: float = 100, val_per_class: int = 10, unsupervised: int = 0, train_on_validation: bool = False,
           minority_acc: float | None = None, balanced_acc: float | None = None) -> dict:
    """A metrics.jsonl record with the fields of docs/method.md#metrics-records."""
    return {
        "dataset": "toy", "imbalance": imbalance, "val_per_class": val_per_class, "unsupervised": unsupervised,
        "method": method, "run": run, "iteration": iteration, "labelled": labelled,
        "validation_labels": validation_labels, "test_acc": test_acc,
        "minority_acc": test_acc - 0.25 if minority_acc is None else minority_acc,
        "balanced_acc": test_acc - 0.125 if balanced_acc is None else balanced_acc,
        "train_on_validation": train_on_validation,
        "seed": run, "class_acc": [test_acc] * 10, "acquire_seconds": 0.0, "train_seconds": 0.0,
    }


def curve_records(method: str, accuracies: list[float], run: int = 0, **kwargs) -> list[dict]:
    return [record(method, run, i, x, acc, **kwargs) for i, (x, acc) in enumerate(zip(X, accuracies))]


def test_synthetic_records_follow_the_results_contract():
    """The records these tests plot are ones the real reader accepts (common/records.py)."""
    assert metrics_problem(record("random", 0, 0, 100, 0.5)) is None
    assert metrics_problem({**record("random", 0, 0, 100, 0.5), "test_acc": 1.5}) == "test_acc is 1.5, expected a fraction"


# ---------------------------------------------------------------------------------------- labels_to_reach


@pytest.mark.parametrize("target, expected", [
    (0.8, 250.0),  # halfway between 0.7 at 200 and 0.9 at 300
    (0.6, 150.0),
    (0.7, 200.0),  # exactly on a point
    (0.9, 300.0),  # exactly the last point
    (0.5, 100.0),  # already at the first point
    (0.3, 100.0),  # below the first point: the first point, no extrapolation
])
def test_labels_to_reach_interpolates_linearly(target, expected):
    result = labels_to_reach(np.array(X), np.array([0.5, 0.7, 0.9]), target)
    assert isinstance(result, float)
    assert result == pytest.approx(expected)


def test_labels_to_reach_returns_none_when_never_reached():
    assert labels_to_reach(np.array(X), np.array([0.5, 0.7, 0.9]), 0.95) is None
    assert labels_to_reach(np.array([100]), np.array([0.5]), 0.6) is None


def test_labels_to_reach_takes_the_first_crossing_of_a_non_monotone_curve():
    x = np.array([100, 200, 300, 400, 500])
    accuracy = np.array([0.5, 0.9, 0.6, 0.95, 0.7])
    # 0.8 is crossed between 100 and 200 (at 175), again between 300 and 400: the first one counts.
    assert labels_to_reach(x, accuracy, 0.8) == pytest.approx(175.0)
    # 0.92 is only reached at the fourth point, interpolated from the dip at 300.
    assert labels_to_reach(x, accuracy, 0.92) == pytest.approx(300 + (0.92 - 0.6) / (0.95 - 0.6) * 100)


# ----------------------------------------------------------------------------------------- label savings


def three_curves(**kwargs) -> dict:
    """random never reaches entropy's final 0.7; entropy needs 300 labels; fk-nn needs 200."""
    records = (curve_records("random", [0.4, 0.5, 0.6]) + curve_records("entropy", [0.5, 0.6, 0.7])
               + curve_records("fk-nn", [0.6, 0.7, 0.8], validation_labels=100))
    curves = aggregate(records, "test_acc", **kwargs)
    assert set(curves) == {(100, 10, 0, "", "random"), (100, 10, 0, "", "entropy"), (100, 10, 0, "", "fk-nn")}
    return {key[-1]: curve for key, curve in curves.items()}


def test_label_savings_default_target_is_the_best_baseline_final_accuracy():
    target, best, rows = label_savings(three_curves())
    assert target == pytest.approx(0.7)
    assert best == "entropy"  # fk-nn is higher but uses validation labels: not a baseline
    assert [row.method for row in rows] == ["fk-nn", "entropy", "random"]  # by labels needed, never-reached last
    fk, entropy, random_ = rows
    assert fk.labels == pytest.approx(200.0)
    assert fk.vs_best_baseline == "33%"  # 1 - 200/300
    assert fk.vs_random == ">= 33%"  # random never got there: a lower bound from its final 300 labels
    assert entropy.labels == pytest.approx(300.0)
    assert entropy.vs_best_baseline == "-"
    assert entropy.vs_random == ">= 0%"
    assert random_.labels is None
    assert random_.vs_random == "-"
    assert random_.vs_best_baseline == "not reached"
    assert [row.final_x for row in rows] == [300.0, 300.0, 300.0]


def test_label_savings_explicit_target():
    target, best, rows = label_savings(three_curves(), target=0.55)
    assert target == 0.55
    assert best == "entropy"
    assert [(row.method, row.labels) for row in rows] == [
        ("fk-nn", pytest.approx(100.0)), ("entropy", pytest.approx(150.0)), ("random", pytest.approx(250.0)),
    ]
    by_method = {row.method: row for row in rows}
    assert by_method["fk-nn"].vs_random == "60%"  # 1 - 100/250
    assert by_method["fk-nn"].vs_best_baseline == "33%"  # 1 - 100/150
    assert by_method["entropy"].vs_random == "40%"  # 1 - 150/250
    assert by_method["random"].vs_best_baseline == "-67%"  # random needs more labels than entropy


def test_label_savings_unreachable_target_and_no_baseline():
    _, _, rows = label_savings(three_curves(), target=0.99)
    assert [row.labels for row in rows] == [None, None, None]
    assert [row.method for row in rows] == ["entropy", "fk-nn", "random"]  # ties broken by name
    fk_only = {"fk-nn": three_curves()["fk-nn"]}
    with pytest.raises(ValueError, match="no baseline"):
        label_savings(fk_only)
    target, best, rows = label_savings(fk_only, target=0.75)
    assert (target, best) == (0.75, "-")
    assert rows[0].labels == pytest.approx(250.0) and rows[0].vs_random == "-" and rows[0].vs_best_baseline == "-"


def test_label_savings_ignores_the_all_train_reference():
    curves = three_curves()
    all_train = aggregate([record(ALL_TRAIN, 0, 0, 1000, 0.95)], "test_acc")
    curves[ALL_TRAIN] = next(iter(all_train.values()))
    target, best, rows = label_savings(curves)
    assert (target, best) == (pytest.approx(0.7), "entropy")  # all-train's 0.95 is not the target
    assert ALL_TRAIN not in [row.method for row in rows]


def test_savings_markdown_table():
    target, best, rows = label_savings(three_curves())
    text = savings_markdown(target, best, rows, "labelled pool images")
    lines = text.splitlines()
    assert lines[0] == "Target test accuracy 0.7000 (best baseline: entropy); labelled pool images."
    assert lines[2] == "| method | labels to reach target | saving vs random | saving vs best baseline |"
    assert lines[4:] == [
        "| fk-nn | 200 | >= 33% | 33% |",
        "| entropy | 300 | >= 0% | - |",
        "| random | not reached by 300 | - | not reached |",
    ]


# --------------------------------------------------------------------------------------------- aggregate


def test_aggregate_mean_and_population_std_over_runs():
    records = [record("random", 0, 0, 100, 0.5), record("random", 1, 0, 100, 0.7),
               record("random", 0, 1, 200, 0.6), record("random", 1, 1, 200, 0.6)]
    curves = aggregate(records, "test_acc")
    assert list(curves) == [(100, 10, 0, "", "random")]
    curve = curves[(100, 10, 0, "", "random")]
    np.testing.assert_array_equal(curve.x, [100, 200])
    np.testing.assert_allclose(curve.mean, [0.6, 0.6])
    np.testing.assert_allclose(curve.std, [0.1, 0.0], atol=1e-12)  # ddof=0, not the sample std 0.1414
    np.testing.assert_array_equal(curve.runs, [2, 2])
    assert curve.run_label() == "2 runs"
    minority = aggregate(records, "minority_acc")[(100, 10, 0, "", "random")]
    np.testing.assert_allclose(minority.mean, [0.35, 0.35])


def test_aggregate_partial_results_are_not_zero_filled():
    records = [record("entropy", run, 0, 100, 0.5 + 0.1 * run) for run in range(3)]  # 3 runs at 100
    records += [record("entropy", run, 1, 200, 0.8) for run in range(2)]  # only 2 runs got to 200
    records += [record("random", 0, 0, 100, 0.4), record("random", 0, 2, 300, 0.6)]  # run 0 lacks 200
    curves = aggregate(records, "test_acc")
    entropy = curves[(100, 10, 0, "", "entropy")]
    np.testing.assert_array_equal(entropy.x, [100, 200])
    np.testing.assert_array_equal(entropy.runs, [3, 2])
    np.testing.assert_allclose(entropy.mean, [0.6, 0.8])  # the 200 point averages 2 runs, no zeros
    assert entropy.run_label() == "2-3 runs"
    random_ = curves[(100, 10, 0, "", "random")]
    np.testing.assert_array_equal(random_.x, [100, 300])  # the missing point is absent, not 0
    np.testing.assert_allclose(random_.mean, [0.4, 0.6])
    assert random_.run_label() == "1 run"


def test_aggregate_skips_missing_values_and_separates_settings():
    records = [record("random", 0, 0, 100, 0.5), record("random", 0, 0, 100, 0.9, imbalance=10),
               record("random", 0, 0, 100, 0.7, unsupervised=1), record("random", 0, 0, 100, 0.3, val_per_class=5)]
    records.append({**record("random", 1, 0, 100, 0.5), "test_acc": None})  # not recorded: ignored
    curves = aggregate(records, "test_acc")
    assert {key: (curve.mean.tolist(), curve.runs.tolist()) for key, curve in curves.items()} == {
        (100, 10, 0, "", "random"): ([0.5], [1]),
        (10, 10, 0, "", "random"): ([0.9], [1]),
        (100, 10, 1, "", "random"): ([0.7], [1]),
        (100, 5, 0, "", "random"): ([0.3], [1]),
    }


def test_aggregate_count_validation_shifts_only_methods_with_validation_labels():
    records = (curve_records("random", [0.4, 0.5, 0.6])
               + curve_records("fk-nn", [0.6, 0.7, 0.8], validation_labels=100))
    plain = aggregate(records, "test_acc")
    counted = aggregate(records, "test_acc", count_validation=True)
    np.testing.assert_array_equal(plain[(100, 10, 0, "", "fk-nn")].x, [100, 200, 300])
    np.testing.assert_array_equal(counted[(100, 10, 0, "", "fk-nn")].x, [200, 300, 400])
    np.testing.assert_array_equal(counted[(100, 10, 0, "", "random")].x, [100, 200, 300])
    np.testing.assert_allclose(counted[(100, 10, 0, "", "fk-nn")].mean, [0.6, 0.7, 0.8])


def test_aggregate_train_on_validation_is_its_own_curve():
    records = (curve_records("random", [0.4, 0.5, 0.6])
               + curve_records("random", [0.5, 0.6, 0.7], train_on_validation=True, validation_labels=100))
    curves = aggregate(records, "test_acc", count_validation=True)
    assert set(curves) == {(100, 10, 0, "", "random"), (100, 10, 0, "", "random+trainval")}
    np.testing.assert_allclose(curves[(100, 10, 0, "", "random")].mean, [0.4, 0.5, 0.6])
    np.testing.assert_array_equal(curves[(100, 10, 0, "", "random+trainval")].x, [200, 300, 400])


def test_method_label_and_uses_validation_labels():
    assert method_label({"method": "entropy"}) == "entropy"
    assert method_label({"method": "entropy", "train_on_validation": False}) == "entropy"
    assert method_label({"method": "entropy", "train_on_validation": True}) == "entropy+trainval"
    assert uses_validation_labels("fk-nn") and uses_validation_labels("fk-oracle")
    assert uses_validation_labels("entropy+trainval") and uses_validation_labels("fk-nn+trainval")
    assert not uses_validation_labels("random")
    assert not uses_validation_labels("entropy")
    assert not uses_validation_labels(ALL_TRAIN)
    assert not uses_validation_labels("no-such-method")


def test_train_on_validation_baseline_is_not_the_best_baseline():
    records = (curve_records("random", [0.4, 0.5, 0.6])
               + curve_records("random", [0.7, 0.8, 0.9], train_on_validation=True, validation_labels=100))
    curves = {key[-1]: c for key, c in aggregate(records, "test_acc").items()}
    target, best, rows = label_savings(curves)
    assert (target, best) == (pytest.approx(0.6), "random")
    assert [(row.method, row.labels, row.vs_random, row.vs_best_baseline) for row in rows] == [
        ("random+trainval", pytest.approx(100.0), "67%", "67%"),  # 1 - 100/300
        ("random", pytest.approx(300.0), "-", "-"),
    ]


# -------------------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_known_example():
    truth = np.array([0, 0, 0, 0, 1, 1, 3])
    predicted = np.array([0, 0, 0, 1, 1, 3, 3])
    matrix = confusion_matrix(predicted, truth, 4)
    np.testing.assert_allclose(matrix, [
        [0.75, 0.25, 0.0, 0.0],
        [0.0, 0.5, 0.0, 0.5],
        [0.0, 0.0, 0.0, 0.0],  # class 2 never occurs in truth: a row of zeros, not NaN
        [0.0, 0.0, 0.0, 1.0],
    ])
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(matrix.sum(axis=1), [1, 1, 0, 1])


def test_confusion_matrix_rows_sum_to_one_on_random_predictions():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, 500)
    predicted = rng.integers(0, 10, 500)
    matrix = confusion_matrix(predicted, truth, 10)
    present = np.isin(np.arange(10), truth)
    np.testing.assert_allclose(matrix.sum(axis=1)[present], 1.0)
    counts = np.zeros((10, 10))
    for t, p in zip(truth, predicted):
        counts[t, p] += 1
    np.testing.assert_allclose(matrix, counts / counts.sum(axis=1, keepdims=True))
    assert np.isfinite(matrix).all()


# ---------------------------------------------------------------------------------------------- safe_name


@pytest.mark.parametrize("text, expected", [
    ("a/b:c*d?.png", "a_b_c_d_.png"),
    ("ir100_val10_unsup0", "ir100_val10_unsup0"),
    ("ir0.5_val10", "ir0.5_val10"),
    ('x<y>z|"w\\v', "x_y_z_w_v"),
    ("  spaces and tabs\t", "spaces_and_tabs"),
    ("/leading/", "leading"),
    ("///", "unnamed"),
    ("", "unnamed"),
    ("é-ü", "-"),
])
def test_safe_name(text, expected):
    name = safe_name(text)
    assert name == expected
    assert SAFE.match(name)


# ----------------------------------------------------------------------------------- run_plot on a tree

POOL = 1000
# (method, run) -> test accuracies at 100, 200, 300 labelled images
TREE = {
    ("random", 0): [0.3, 0.5, 0.6], ("random", 1): [0.5, 0.5, 0.6],  # mean 0.4/0.5/0.6, std 0.1 at 100
    ("entropy", 0): [0.5, 0.6, 0.7], ("entropy", 1): [0.5, 0.6, 0.7],
    ("fk-nn", 0): [0.55, 0.65, 0.75], ("fk-nn", 1): [0.65, 0.75, 0.85],  # mean 0.6/0.7/0.8, std 0.05
}


def write_tree(out: Path, dataset: str = "toy") -> Path:
    for (method, run), accuracies in TREE.items():
        folder = out / dataset / "ir100_val10" / f"run{run}" / "unsup0" / method
        folder.mkdir(parents=True)
        validation = 100 if method.startswith("fk-") else 0
        lines = [json.dumps(r) for r in curve_records(method, accuracies, run=run, validation_labels=validation)]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    for run in (0, 1):
        folder = out / dataset / "ir100_val10" / f"run{run}" / "unsup0" / ALL_TRAIN
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text(json.dumps(record(ALL_TRAIN, run, 0, POOL, 0.95)) + "\n")
    return out / dataset / "plots"


def run_plot(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_plot.py", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def csv_rows(path: Path) -> dict[tuple, dict]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    table = {(r["method"], r["metric"], int(r["labels"])): r for r in rows}
    assert len(table) == len(rows)  # one row per (method, metric, labels)
    return table


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    """run_plot.py --dataset toy on the synthetic tree, once for the module."""
    out = tmp_path_factory.mktemp("results")
    plots = write_tree(out)
    result = run_plot("--dataset", "toy", "--out", out)
    return out, plots, result


def test_run_plot_writes_plots_csv_and_markdown(plotted):
    _, plots, result = plotted
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["curves.csv", "curves_ir100_val10_unsup0.pdf", "curves_ir100_val10_unsup0.png",
                     "savings_ir100_val10_unsup0.md"]
    assert all(SAFE.match(name) for name in names)
    png, pdf = plots / "curves_ir100_val10_unsup0.png", plots / "curves_ir100_val10_unsup0.pdf"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.stat().st_size > 1000 and pdf.read_bytes()[:5] == b"%PDF-"
    printed = [Path(line) for line in result.stdout.splitlines()]
    assert sorted(p.name for p in printed) == names  # every written file is printed


def test_run_plot_csv_numbers(plotted):
    _, plots, _ = plotted
    table = csv_rows(plots / "curves.csv")
    assert len(table) == 3 * (3 * 3 + 1)  # 3 metrics x (3 methods x 3 counts + all-train)
    row = table[("fk-nn", "test_acc", 200)]
    assert (row["imbalance"], row["val_per_class"], row["unsupervised"]) == ("100", "10", "0")
    assert (row["mean"], row["std"], row["runs"]) == ("0.700000", "0.050000", "2")
    row = table[("random", "test_acc", 100)]
    assert (row["mean"], row["std"], row["runs"]) == ("0.400000", "0.100000", "2")
    row = table[("random", "minority_acc", 100)]
    assert (row["mean"], row["std"]) == ("0.150000", "0.100000")
    row = table[("entropy", "balanced_acc", 300)]
    assert (row["mean"], row["std"], row["runs"]) == ("0.575000", "0.000000", "2")
    row = table[(ALL_TRAIN, "test_acc", POOL)]
    assert (row["mean"], row["std"], row["runs"]) == ("0.950000", "0.000000", "2")
    assert not [key for key in table if key[0] == "fk-nn" and key[2] == 400]  # no validation shift by default


def test_run_plot_savings_markdown(plotted):
    _, plots, _ = plotted
    text = (plots / "savings_ir100_val10_unsup0.md").read_text()
    assert text.startswith("# toy, imbalance 100, 10 validation images/class, random start\n")
    # every label counted: fk-nn's 100 validation labels move its 0.7 from 200 to 300 labels
    assert "Target test accuracy 0.7000 (best baseline: entropy); labelled pool + validation images." in text
    tables = text.split("Target ")[1:]
    assert [t.split(" 0.")[0] for t in tables] == ["test accuracy", "minority-class accuracy", "balanced accuracy"]
    rows = [line for line in tables[0].splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert rows == [
        "| entropy | 300 | >= 0% | - |",
        "| fk-nn | 300 | >= 0% | 0% |",
        "| random | not reached by 300 | - | not reached |",
    ]
    assert "Target minority-class accuracy 0.4500 (best baseline: entropy)" in text  # entropy's 0.7 - 0.25


def test_run_plot_one_metric(tmp_path):
    plots = write_tree(tmp_path)
    result = run_plot("--dataset", "toy", "--out", tmp_path, "--metric", "balanced_acc")
    assert result.returncode == 0, result.stderr
    text = (plots / "savings_ir100_val10_unsup0.md").read_text()
    assert text.count("Target ") == 1
    assert "Target balanced accuracy 0.5750 (best baseline: entropy)" in text  # 0.7 - 0.125
    assert_one_line_error(run_plot("--dataset", "toy", "--out", tmp_path, "--metric", "f1"))


def test_run_plot_count_validation(tmp_path):
    plots = write_tree(tmp_path)
    result = run_plot("--dataset", "toy", "--out", tmp_path, "--count-validation")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["curves_countval.csv", "curves_ir100_val10_unsup0_countval.pdf",
                     "curves_ir100_val10_unsup0_countval.png", "savings_ir100_val10_unsup0.md"]
    assert all((plots / name).stat().st_size > 0 for name in names)
    table = csv_rows(plots / "curves_countval.csv")
    assert sorted(x for method, metric, x in table if method == "fk-nn" and metric == "test_acc") == [200, 300, 400]
    assert sorted(x for method, metric, x in table if method == "entropy" and metric == "test_acc") == [100, 200, 300]
    row = table[("fk-nn", "test_acc", 300)]  # the 200-label point moved by the 100 validation labels
    assert (row["mean"], row["std"], row["runs"]) == ("0.700000", "0.050000", "2")
    text = (plots / "savings_ir100_val10_unsup0.md").read_text()  # the same tables: they always count every label
    assert "Target test accuracy 0.7000 (best baseline: entropy); labelled pool + validation images." in text
    assert "| fk-nn | 300 | >= 0% | 0% |" in text  # 300 labels in all, the same as entropy's


def test_report_explicit_target(tmp_path):
    import run_plot as run_plot_module

    write_tree(tmp_path)
    records = load_records(tmp_path / "toy")
    assert len(records) == 6 * 3 + 2
    written = run_plot_module.report(records, "toy", tmp_path / "plots", False, 0.65)
    assert sorted(p.name for p in written) == ["curves.csv", "curves_ir100_val10_unsup0.pdf",
                                               "curves_ir100_val10_unsup0.png", "savings_ir100_val10_unsup0.md"]
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    text = (tmp_path / "plots" / "savings_ir100_val10_unsup0.md").read_text()
    assert "Target test accuracy 0.6500 (best baseline: entropy)" in text
    table = [line for line in text.split("Target ")[1].splitlines() if line.startswith("| ")
             and not line.startswith("| method")]
    assert sorted(table) == [  # fk-nn's 0.65 at 150 pool + 100 validation labels: a tie with entropy
        "| entropy | 250 | >= 17% | - |",  # 1 - 250/300
        "| fk-nn | 250 | >= 17% | 0% |",
        "| random | not reached by 300 | - | not reached |",
    ]


def test_report_without_a_baseline_writes_a_note(tmp_path):
    import run_plot as run_plot_module

    records = curve_records("fk-nn", [0.6, 0.7, 0.8], validation_labels=100) + [record(ALL_TRAIN, 0, 0, POOL, 0.9)]
    run_plot_module.report(records, "toy", tmp_path, False, None)
    text = (tmp_path / "savings_ir100_val10_unsup0.md").read_text()
    assert "No label-savings table for test accuracy: no baseline curve to take the target from; pass a target." in text


def test_report_one_file_set_per_setting_with_safe_names(tmp_path):
    import run_plot as run_plot_module

    records = (curve_records("random", [0.4, 0.5, 0.6], imbalance=0.5)
               + curve_records("random", [0.4, 0.5, 0.6], imbalance=100, unsupervised=1))
    written = run_plot_module.report(records, "a/b:c", tmp_path, False, None)
    names = sorted(p.name for p in written)
    assert names == ["curves.csv",
                     "curves_ir0.5_val10_unsup0.pdf", "curves_ir0.5_val10_unsup0.png",
                     "curves_ir100_val10_unsup1.pdf", "curves_ir100_val10_unsup1.png",
                     "savings_ir0.5_val10_unsup0.md", "savings_ir100_val10_unsup1.md"]
    assert all(SAFE.match(name) for name in names)
    assert "rotation-pretrained start" in (tmp_path / "savings_ir100_val10_unsup1.md").read_text()


def test_run_plot_partial_results_count_runs(tmp_path):
    out = tmp_path / "out"
    plots = write_tree(out)
    # a third random run that stopped after its first iteration
    folder = out / "toy" / "ir100_val10" / "run2" / "unsup0" / "random"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(json.dumps(record("random", 2, 0, 100, 0.7)) + "\n")
    result = run_plot("--dataset", "toy", "--out", out)
    assert result.returncode == 0, result.stderr
    table = csv_rows(plots / "curves.csv")
    assert [table[("random", "test_acc", x)]["runs"] for x in X] == ["3", "2", "2"]
    assert table[("random", "test_acc", 100)]["mean"] == "0.500000"  # (0.3 + 0.5 + 0.7) / 3
    assert table[("random", "test_acc", 200)]["mean"] == "0.500000"  # not pulled down by a zero


def test_run_plot_empty_results_is_a_one_line_error(tmp_path):
    (tmp_path / "toy").mkdir()
    result = run_plot("--dataset", "toy", "--out", tmp_path)
    line = assert_one_line_error(result)
    assert result.returncode == 2
    assert "no metrics.jsonl results" in line
    assert not (tmp_path / "toy" / "plots").exists()
    missing = run_plot("--dataset", "nothing-here", "--out", tmp_path)  # not even the dataset folder
    assert missing.returncode == 2
    assert "no metrics.jsonl results" in assert_one_line_error(missing)


def test_run_plot_imbalance_filter_leaving_nothing_is_a_one_line_error(tmp_path):
    write_tree(tmp_path)
    result = run_plot("--dataset", "toy", "--out", tmp_path, "--imbalance", "7")
    assert result.returncode == 2
    assert "no results for --imbalance 7" in assert_one_line_error(result) and "found: 100" in result.stderr


def test_run_plot_corrupted_results_is_a_one_line_error(tmp_path):
    write_tree(tmp_path)
    path = tmp_path / "toy" / "ir100_val10" / "run0" / "unsup0" / "random" / "metrics.jsonl"
    path.write_text(path.read_text() + '{"method": "random", "labe\n')
    result = run_plot("--dataset", "toy", "--out", tmp_path)
    assert result.returncode == 2
    line = assert_one_line_error(result)
    assert "corrupted" in line and "line 4" in line


# ----------------------------------------------------------------------- baselines and the decision table


def test_trainval_baselines_compete_only_when_their_validation_labels_count():
    curves = {"entropy+trainval": make_curve([200, 300], [0.7, 0.8]), "fk-nn": make_curve([200, 300], [0.6, 0.75]),
              "random": make_curve([100, 200], [0.5, 0.6])}
    assert is_baseline("entropy+trainval", validation_counted=True)
    assert not is_baseline("entropy+trainval", validation_counted=False)
    assert not is_baseline("fk-nn-kfold", validation_counted=True) and not is_baseline(ALL_TRAIN, True)
    assert label_savings(curves, validation_counted=True)[1] == "entropy+trainval"
    assert label_savings(curves, validation_counted=False)[1] == "random"


def make_curve(x, mean, std=None, runs=3) -> Curve:
    return Curve(x=np.array(x), mean=np.array(mean), std=np.array(std or [0.01] * len(x)),
                 runs=np.array([runs] * len(x)))


DECISION_CURVES = {  # (validation per class, label) -> curve, x = every label counted
    (10, "entropy+trainval"): make_curve([225, 350, 475], [0.70, 0.74, 0.76], [0.02, 0.02, 0.02]),
    (100, "entropy+trainval"): make_curve([1125, 1250], [0.80, 0.82]),
    (10, "fk-nn-kfold"): make_curve([225, 350, 475], [0.69, 0.75, 0.80], [0.02, 0.02, 0.02]),
    (10, "random"): make_curve([125, 250, 375, 500], [0.40, 0.45, 0.50, 0.55]),
    (100, "random"): make_curve([125, 250, 375, 500], [0.41, 0.47, 0.52, 0.56]),
}


def test_standings_take_each_curves_last_point_within_the_budget():
    ranked = standings(DECISION_CURVES, 400)
    assert [(s.label, s.val_per_class, s.labels, s.mean) for s in ranked] == [
        ("fk-nn-kfold", 10, 350, 0.75), ("entropy+trainval", 10, 350, 0.74),
        ("random", 100, 375, 0.52), ("random", 10, 375, 0.50)]  # val 100 curves start beyond 400
    assert standings(DECISION_CURVES, 100) == []


def test_decide_names_best_runner_up_gap_fk_and_labels_to_match():
    decision = decide(DECISION_CURVES, 1000)
    assert decision.best.name() == "fk-nn-kfold (val 10/class)" and decision.best.mean == 0.80
    assert decision.runner_up.name() == "entropy+trainval (val 10/class)"  # the other method, not another val size
    assert gap_in_std(decision.best, decision.runner_up) == pytest.approx(2.0)  # 0.04 / 0.02
    assert decision.best_fk == decision.best
    assert decision.best_baseline.label == "entropy+trainval" and decision.best_baseline.labels == 475
    assert decision.fk_labels_to_match == pytest.approx(350 + 125 * (0.76 - 0.75) / (0.80 - 0.75))  # 375
    small = decide(DECISION_CURVES, 250)  # entropy+trainval's 0.70 at 225 beats fk-nn-kfold's 0.69 there
    assert (small.best.label, small.best.labels, small.runner_up.label) == ("entropy+trainval", 225, "fk-nn-kfold")
    assert small.best_baseline == small.best
    assert small.fk_labels_to_match == pytest.approx(225 + 125 * 0.01 / 0.06)  # FK needs more labels here
    text = decision_markdown([decision, small], "balanced_acc")
    assert "| 1000 | fk-nn-kfold (val 10/class): 0.800 ± 0.020 at 475 (3 runs) |" in text
    assert "| 2.0 |" in text and "375 (21% fewer)" in text and "246 (9% more)" in text


def test_gap_in_std_without_spread():
    one = Standing("a", 10, 100, 0.5, 0.0, 1)
    assert gap_in_std(one, one) == 0.0
    assert np.isnan(gap_in_std(Standing("a", 10, 100, 0.6, 0.0, 1), one))


def test_chosen_minority_sets_are_separate_settings():
    default = record("random", 0, 0, 100, 0.5)
    chosen = {**default, "minority_classes": [2, 4, 6], "minority_set": "min2-4-6"}
    assert setting_key(default)[3] == "" and setting_key(chosen)[3] == "min2-4-6"
    assert len(aggregate([default, chosen], "test_acc")) == 2


def test_the_method_facts_reports_use_agree_with_the_strategies():
    """common.methods is what reports know without loading torch; the strategies are the truth."""
    from common.strategies import STRATEGIES
    from federated.strategies import CLIENT_METHODS

    central = {name for name in STRATEGIES.names() if STRATEGIES.get(name).uses_validation_labels}
    federated = {name for name in CLIENT_METHODS.names() if CLIENT_METHODS.get(name).server_merged}
    assert central | federated == READS_VALIDATION
    assert ALL_TRAIN not in STRATEGIES.names() and ALL_TRAIN not in CLIENT_METHODS.names()
    assert base_method("fk-nn+trainval") == "fk-nn" and base_method("ksas+kcfu") == "ksas"
    assert base_method("entropy+sync") == "entropy" and base_method("fk-nn-kfold") == "fk-nn-kfold"
    assert is_reference(ALL_TRAIN) and is_reference(ALL_TRAIN + "+trainval") and not is_reference("random")


def test_reports_load_neither_torch_nor_faiss_nor_matplotlib_to_start():
    """run_plot.py --help answers at once: the readers of results import no model code."""
    probe = ("import sys; sys.argv = ['run_plot.py']; import run_plot, common.reporting, common.methods; "
             "print(sorted(m for m in ('torch', 'faiss', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    helped = subprocess.run([sys.executable, "run_plot.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and "usage: run_plot.py" in helped.stdout


def test_aubc_of_known_curves():
    from common.reporting import aubc

    assert aubc(np.array([0, 50, 100]), np.array([0.7, 0.7, 0.7]), 0, 100) == pytest.approx(0.7)
    assert aubc(np.array([0, 100]), np.array([0.0, 1.0]), 0, 100) == pytest.approx(0.5)
    # interpolated at both ends of the range: (25 * 0.75 + 25 * 1.0) / 50
    assert aubc(np.array([0, 50, 100]), np.array([0.0, 1.0, 1.0]), 25, 75) == pytest.approx(0.875)
    assert aubc(np.array([10, 20]), np.array([np.nan, 0.4]), 10, 20) == pytest.approx(0.4)  # NaN points ignored


def test_aubc_rows_score_every_method_on_the_range_all_methods_cover():
    from common.reporting import aubc_markdown, aubc_rows

    def record(method, run, labelled, accuracy):
        return {"method": method, "run": run, "labelled": labelled, "validation_labels": 0, "imbalance": 10,
                "val_per_class": 20, "unsupervised": 0, "balanced_acc": accuracy}

    records = [record("a", run, x, x / 100 + run / 10) for run in (0, 1) for x in (0, 50, 100)]
    records += [record("b", 0, x, 0.3) for x in (25, 75, 125)]  # covers 25-125: the shared range is 25-100
    (span, rows), = aubc_rows(records, "balanced_acc").values()
    assert span == (25, 100)
    first, second = rows
    assert (first.label, second.label) == ("a", "b")
    assert first.mean == pytest.approx((0.625 + 0.725) / 2) and first.std == pytest.approx(0.05) and first.runs == 2
    assert second.mean == pytest.approx(0.3) and second.runs == 1
    assert "| a | 0.6750 ± 0.0500 | 2 |" in aubc_markdown(span, rows, "balanced_acc")

    # curves that share no label count (250-500 against 1000-2000) have no like-for-like area: no rows
    disjoint = [record("a", 0, x, 0.5) for x in (250, 500)] + [record("b", 0, x, 0.8) for x in (1000, 2000)]
    assert aubc_rows(disjoint, "balanced_acc") == {}


def test_the_win_matrix_counts_budgets_won_by_a_paired_test_over_seeds():
    from common.reporting import win_matrix, win_matrix_markdown

    def record(method, run, labelled, accuracy):
        return {"method": method, "run": run, "labelled": labelled, "validation_labels": 0, "imbalance": 10,
                "val_per_class": 20, "unsupervised": 0, "test_acc": accuracy}

    noise = [0.00, 0.01, -0.01, 0.02, -0.02]
    records = [record("good", r, x, 0.8 + noise[r]) for r in range(5) for x in (100, 200, 300)]
    records += [record("bad", r, x, 0.6 + noise[(r + 1) % 5]) for r in range(5) for x in (100, 200, 300)]
    records += [record("same", r, x, 0.8 + noise[(r + 2) % 5]) for r in range(5) for x in (100, 200)]
    (names, wins, compared), = win_matrix(records, "test_acc").values()
    index = {name: i for i, name in enumerate(names)}
    assert wins[index["good"], index["bad"]] == 3 and compared[index["good"], index["bad"]] == 3
    assert wins[index["bad"], index["good"]] == 0
    assert wins[index["good"], index["same"]] == 0 and compared[index["good"], index["same"]] == 2  # within noise
    assert "| good | 3/3 | - | 0/2 |" in win_matrix_markdown(names, wins, compared, "test_acc")


def test_the_win_matrix_compares_pool_labels_when_every_method_has_the_same_validation_set():
    """Counting every label, a method that read 100 validation labels shares no label count with one that read
    none; counting pool labels (the headline protocol hands both the same set) they meet at every budget."""
    from common.reporting import win_matrix

    def record(method, run, labelled, validation, accuracy):
        return {"method": method, "run": run, "labelled": labelled, "validation_labels": validation, "imbalance": 10,
                "val_per_class": 20, "unsupervised": 0, "test_acc": accuracy}

    noise = [0.00, 0.01, -0.01, 0.02, -0.02]
    records = [record("reads", r, x, 100, 0.8 + noise[r]) for r in range(5) for x in (100, 200)]
    records += [record("blind", r, x, 0, 0.6 + noise[r]) for r in range(5) for x in (100, 200)]
    (names, wins, compared), = win_matrix(records, "test_acc").values()
    assert compared.max() == 1  # only at 200 total labels: "reads" at 100 pool + 100 validation
    (names, wins, compared), = win_matrix(records, "test_acc", count_validation=False).values()
    index = {name: i for i, name in enumerate(names)}
    assert wins[index["reads"], index["blind"]] == 2 == compared[index["reads"], index["blind"]]


def test_curve_styles_give_each_method_one_colour_and_its_variants_a_dashed_line():
    from run_plot import curve_styles

    methods = ["badge", "direct", "entropy", "fk-nn", "fk-nn-kfold", "fk-nn-split", "probcover", "random", "typiclust"]
    labels = methods + [f"{m}+trainval" for m in methods if not m.startswith("fk-nn-")]
    styles = curve_styles(labels)
    assert len({colour for colour, _ in styles.values()}) == len(methods)  # 16 curves, 9 colours, none shared
    assert styles["entropy+trainval"] == (styles["entropy"][0], "--") and styles["entropy"][1] == "-"
    assert styles["probcover"][0] != styles["badge"][0]  # the 11th curve no longer repeats the 1st one's colour
    many = curve_styles([f"method{i}" for i in range(14)])
    assert len({colour for colour, _ in many.values()}) == 14  # past 10 methods: a 20-colour palette
