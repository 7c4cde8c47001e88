"""The fair comparison's report: run_plot.py's curves and label-savings tables (every label counted,
one table per metric) for each setting, and the decision tables: for each total label budget
(pool + validation), the best method, the runner-up and their gap in std units, where FK stands,
and how many labels FK needs to match the best baseline; beside each, every curve's AUBC and the
pairwise win matrix (at how many label counts a method beats another, paired t-test over runs).

Written to benchmarks/results/fair_comparison.md; the plots and per-setting tables go to docs/.
"""
from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

from benchmarks.reports import RESULTS
from common.naming import START_NAMES
from common.reporting import (
    METRICS, Curve, aggregate, aubc_markdown, aubc_rows, decide, decision_markdown, load_records, method_label,
    setting_key, win_matrix, win_matrix_markdown,
)
from run_plot import report, variant_title

# Total labels (pool + validation) of the decision tables: the small budgets the table is for, and
# 11 000 = the 1000-per-class validation set (10 000) + 1000 pool labels, where the tier-3 cells end.
BUDGETS = (250, 500, 1000, 2000, 11_000)
DECISION_METRICS = ("balanced_acc", "minority_acc", "test_acc")
DATASET = "fashion-mnist"


def decision_curves(records: list[dict], metric: str) -> dict[tuple, dict[tuple[int, str], Curve]]:
    """protocol_of -> (validation per class, method label) -> Curve, every label counted: the curves one
    decision table chooses between (validation sizes side by side; the cold start has a table of its own)."""
    grouped: dict[tuple, dict[tuple[int, str], Curve]] = defaultdict(dict)
    for (imbalance, val_per_class, unsupervised, variant, label), curve in aggregate(records, metric, True).items():
        grouped[(imbalance, unsupervised, variant, val_per_class == 0)][(val_per_class, label)] = curve
    return grouped


def protocol_title(imbalance: float, unsupervised: int, variant: str, cold: bool = False) -> str:
    start = f"{START_NAMES[unsupervised]} start"
    return (f"imbalance {imbalance:g}, {start}" + (f", {variant_title(variant)}" if variant else "")
            + (", cold start (no validation set given: every label from the method's own acquisitions)" if cold
               else ""))


def budgets_with_points(curves: dict[tuple[int, str], Curve], budgets: tuple[int, ...] = BUDGETS) -> list[int]:
    """The budgets some curve has a point for above the budget before: a row whose curves all end below it
    would only repeat the row before (the protocols without 1000-per-class runs end at 2000 labels)."""
    return [budget for low, budget in zip((0, *budgets), budgets)
            if any(((curve.x > low) & (curve.x <= budget)).any() for curve in curves.values())]


def protocol_of(record: dict) -> tuple:
    """(imbalance, initial model, protocol variant, cold start): what one decision table covers."""
    imbalance, val_per_class, unsupervised, variant = setting_key(record)
    return imbalance, unsupervised, variant, val_per_class == 0


def curve_name(record: dict) -> str:
    return f"{method_label(record)} (val {record.get('val_per_class')}/class)"


def label_range_group(record: dict) -> tuple:
    """protocol_of, the validation size and whether the method read the validation labels: the curves that
    cover the same label totals, so their AUBCs and win matrix compare like for like (at 100/class a method
    that reads the set starts at 1125 labels, one that never reads it at 125)."""
    return *protocol_of(record), record.get("val_per_class"), record.get("validation_labels", 0) > 0


def range_group_title(val_per_class: int, read: bool) -> str:
    if val_per_class == 0:
        return "no validation set"
    return f"validation {val_per_class}/class, " + ("methods that read it" if read else "methods that never read it")


def per_label_range(protocol: tuple, tables: dict[tuple, tuple], markdown) -> str:
    """The protocol's tables, one per label_range_group, each under its title."""
    keys = sorted((key for key in tables if key[:-2] == protocol), key=lambda key: (key[-2], not key[-1]))
    return "".join(f"\n\n#### {range_group_title(*key[-2:])}\n\n{markdown(*tables[key])}" for key in keys)


def decision_tables(records: list[dict]) -> str:
    sections = []
    for metric in DECISION_METRICS:
        areas = aubc_rows(records, metric, group=label_range_group, name=curve_name)
        matrices = win_matrix(records, metric, group=label_range_group, name=curve_name)
        for protocol, curves in sorted(decision_curves(records, metric).items(), key=str):
            decisions = [d for d in (decide(curves, budget) for budget in budgets_with_points(curves))
                         if d is not None]
            if decisions:
                area = per_label_range(protocol, areas, lambda span, rows: aubc_markdown(span, rows, metric))
                matrix = per_label_range(protocol, matrices, lambda *table: win_matrix_markdown(*table, metric))
                sections.append(f"### {METRICS[metric]}: {protocol_title(*protocol)}\n\n"
                                f"{decision_markdown(decisions, metric)}{area}{matrix}")
    return "\n\n".join(sections)


def runs_table(records: list[dict]) -> str:
    """Per setting and method label, how many runs got as far as its furthest run (all of a finished grid's
    runs), so a reader sees what each cell rests on."""
    last: dict[tuple, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    for record in records:
        imbalance, val_per_class, unsupervised, variant = setting_key(record)
        runs = last[(imbalance, unsupervised, variant, val_per_class)][method_label(record)]
        runs[record["run"]] = max(runs.get(record["run"], 0), record["iteration"] + 1)
    lines = ["| setting | validation/class | method: runs (iterations) |", "|---|---|---|"]
    for (imbalance, unsupervised, variant, val_per_class), by_label in sorted(last.items(), key=str):
        cells = ", ".join(f"{label} {sum(n == max(runs.values()) for n in runs.values())} ({max(runs.values())})"
                          for label, runs in sorted(by_label.items()))
        lines.append(f"| {protocol_title(imbalance, unsupervised, variant)} | {val_per_class} | {cells} |")
    return "\n".join(lines)


def write_report(out: Path, docs: Path, results: Path = RESULTS / "fair_comparison.md") -> Path:
    """Plots and per-setting tables into `docs`, the decision tables into the file `results`."""
    records = load_records(out / DATASET)
    plots = out / DATASET / "plots"
    written = report(records, DATASET, plots, count_validation=True, target=None)
    written += report(records, DATASET, plots, count_validation=False, target=None)
    docs.mkdir(exist_ok=True)
    for path in written:
        if path.suffix in (".png", ".md"):
            shutil.copy(path, docs / path.name)
    text = ("# Fair comparison on biased Fashion-MNIST: which method for which total label budget\n\n"
            "Every label counted: pool labels + the validation labels a method read or trained on. A cell is the "
            "curve's point with the most labels within the budget (mean ± std over runs); the gap is in units of "
            "the two curves' pooled std.\n\n" + decision_tables(records) + "\n\n## Runs per cell\n\n"
            + runs_table(records) + "\n")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(text)
    print(text)
    return results
