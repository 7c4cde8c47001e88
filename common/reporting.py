"""Aggregation of results records into curves, and the label-savings computation.

Pure functions over the metrics.jsonl records (the results contract, docs/method.md#results-contract), shared by
run_plot.py and the benchmarks, so every number in a plot or table is computed one way.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.methods import is_reference, reads_validation
from common.naming import protocol_variant, run_label
from common.records import check_queries, check_rounds, read_metrics, read_rounds

# the accuracies every metrics line holds, as plots and tables name them (the one list of them)
METRICS = {"test_acc": "test accuracy", "minority_acc": "minority-class accuracy", "balanced_acc": "balanced accuracy"}


def load_records(root: Path) -> list[dict]:
    """Every record of every metrics.jsonl below `root`, in a stable order."""
    return [record for path in sorted(root.rglob("metrics.jsonl")) for record in read_metrics(path)]


def load_rounds(root: Path) -> list[dict]:
    """Every line of every federated rounds.jsonl below `root`, in a stable order; each file is checked
    against the cycles its metrics.jsonl says are finished (every round once, in order)."""
    lines = []
    for path in sorted(root.rglob("rounds.jsonl")):
        records = read_metrics(path.parent / "metrics.jsonl")
        rounds = records[0].get("rounds") if records else None
        lines += check_rounds(path, len(records), rounds) if isinstance(rounds, int) else read_rounds(path)
    return lines


def load_queries(root: Path) -> list[dict]:
    """Every line of every asynchronous queries.jsonl below `root`, in a stable order (each file checked:
    requests in order per worker, no image labelled twice)."""
    return [line for path in sorted(root.rglob("queries.jsonl")) for line in check_queries(path)]


@dataclass
class Waits:
    """Query waits of one asynchronous setting at one query batch size, over every request of its runs."""

    mean: float
    p95: float
    requests: int
    runs: int


def query_waits(lines: list[dict]) -> dict[tuple, dict[int, Waits]]:
    """(imbalance, validation size, initial model, curve label, workers, servers, latency) -> query batch ->
    Waits: AAL's "average query time" against the batch size, sync and async as separate curves."""
    grouped: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        key = (*setting_key(line)[:3], method_label(line), line["workers"], line["servers"],
               tuple(line["latency_range"]))
        grouped[key][line["query_batch"]].append(line)
    return {
        key: {batch: Waits(mean=float(np.mean([q["simulated_wait"] for q in requests])),
                           p95=float(np.percentile([q["simulated_wait"] for q in requests], 95)),
                           requests=len(requests), runs=len({(q["run"], q["asynchronous"]) for q in requests}))
              for batch, requests in sorted(by_batch.items())}
        for key, by_batch in grouped.items()
    }


def round_curves(lines: list[dict]) -> dict[tuple, Curve]:
    """(setting key..., method label) -> Curve of the global model's test accuracy against the
    communication round counted over the whole run (cycle c, round r -> c * R + r)."""
    rounds_per_cycle = {setting_key(line): 0 for line in lines}
    for line in lines:
        rounds_per_cycle[setting_key(line)] = max(rounds_per_cycle[setting_key(line)], line["round"])
    as_records = [{**line, "labelled": line["cycle"] * rounds_per_cycle[setting_key(line)] + line["round"]}
                  for line in lines]
    return aggregate(as_records, "test_acc")


def method_label(record: dict) -> str:
    """The curve a record belongs to: its method, marked when it also trained on validation, (federated)
    trained its clients with KCFU, or (asynchronous) queried in synchronous rounds."""
    return run_label(record["method"], bool(record.get("train_on_validation")), record.get("local_loss", "ce"),
                     bool(record.get("sync")))


def setting_key(record: dict) -> tuple:
    """What must match for curves to share a plot: imbalance, validation size, initial model, and the
    protocol variant (a chosen minority set "min2-4-6", a starting set "init500", federated "fed-<federation>", asynchronous
    "async-<...>"; "" for a default central run): common.experiment.protocol_variant, so plots are named
    like the run folders."""
    variant = protocol_variant(record.get("federation", ""), record.get("asynchronous", ""),
                               record.get("minority_set", ""), record.get("initial_labels", 0))
    return (record["imbalance"], record.get("val_per_class"), record["unsupervised"], variant)


def uses_validation_labels(label: str) -> bool:
    """Whether a curve's method consumed the labelled validation set (FK methods, +trainval)."""
    return label.endswith("+trainval") or reads_validation(label)


def is_baseline(label: str, validation_counted: bool) -> bool:
    """A curve FK is compared against: a method whose acquisition reads no validation labels. Training on
    the validation set (+trainval) makes it a baseline only when those labels are counted (else it got
    them free)."""
    if is_reference(label) or reads_validation(label):
        return False
    return validation_counted or not label.endswith("+trainval")


@dataclass
class Curve:
    """Mean and std over runs of one metric against the labelled count, with the run counts."""

    x: np.ndarray  # labelled pool images (+ validation labels with count_validation)
    mean: np.ndarray
    std: np.ndarray
    runs: np.ndarray  # how many runs contributed to each point

    def run_label(self) -> str:
        low, high = int(self.runs.min()), int(self.runs.max())
        return f"{low} run{'s' if low != 1 else ''}" if low == high else f"{low}-{high} runs"


def aggregate(records: list[dict], metric: str, count_validation: bool = False) -> dict[tuple, Curve]:
    """(setting key..., method label) -> Curve of `metric` (NaN values ignored, never zero-filled)."""
    grouped: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        x = record["labelled"] + (record.get("validation_labels", 0) if count_validation else 0)
        value = record.get(metric)
        if value is None:
            continue
        grouped[(*setting_key(record), method_label(record))][x].append(float(value))
    curves = {}
    for key, by_x in grouped.items():
        xs = np.array(sorted(by_x))
        values = [np.array(by_x[x]) for x in xs]
        curves[key] = Curve(
            x=xs,
            mean=np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in values]),
            std=np.array([np.nanstd(v) if np.isfinite(v).any() else np.nan for v in values]),
            runs=np.array([len(v) for v in values]),
        )
    return curves


def labels_to_reach(x: np.ndarray, accuracy: np.ndarray, target: float) -> float | None:
    """Labels at which a curve first reaches `target`, linearly interpolated; None if never."""
    known = np.isfinite(accuracy)  # a point no run could measure is skipped, not interpolated from
    x, accuracy = np.asarray(x)[known], np.asarray(accuracy)[known]
    for i, value in enumerate(accuracy):
        if value >= target:
            if i == 0:
                return float(x[0])
            x0, x1, y0, y1 = x[i - 1], x[i], accuracy[i - 1], accuracy[i]
            return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))
    return None


@dataclass
class Saving:
    """One method's row of the label-savings table."""

    method: str
    labels: float | None  # labels needed to reach the target (None: never reached)
    final_x: float  # the largest labelled count the method was run to
    vs_random: str
    vs_best_baseline: str


def _saving_text(labels: float | None, reference: float | None, reference_final: float) -> str:
    """Saving in % of labels against a reference; a lower bound if the reference never got there."""
    if labels is None:
        return "not reached"
    if reference is None:
        return f">= {100 * (1 - labels / reference_final):.0f}%"
    return f"{100 * (1 - labels / reference):.0f}%"


def label_savings(
    curves: dict[str, Curve], target: float | None = None, validation_counted: bool = False,
) -> tuple[float, str, list[Saving]]:
    """Labels each method needs to reach `target` and the saving against random and the best
    baseline (is_baseline: with `validation_counted`, i.e. curves whose x counts validation labels,
    the baselines that trained on the validation set compete too).

    The default target is the best baseline's mean at its final labelled count.
    Returns (target, best baseline's name, rows sorted by labels needed).
    """
    baselines = {m: c for m, c in curves.items() if is_baseline(m, validation_counted)}
    best = max(baselines, key=lambda m: baselines[m].mean[-1]) if baselines else None
    if target is None:
        if best is None:
            raise ValueError("no baseline curve to take the target from; pass a target")
        target = float(baselines[best].mean[-1])

    def needed(method: str) -> float | None:
        return labels_to_reach(curves[method].x, curves[method].mean, target) if method in curves else None

    rows = []
    for method, curve in curves.items():
        if is_reference(method):
            continue
        labels = needed(method)
        vs_random = (_saving_text(labels, needed("random"), curves["random"].x[-1])
                     if "random" in curves and method != "random" else "-")
        vs_best = (_saving_text(labels, needed(best), curves[best].x[-1])
                   if best is not None and method != best else "-")
        rows.append(Saving(method, labels, float(curve.x[-1]), vs_random, vs_best))
    rows.sort(key=lambda row: (row.labels is None, row.labels or 0.0, row.method))
    return target, best or "-", rows


def savings_markdown(target: float, best: str, rows: list[Saving], x_name: str, metric: str = "test_acc") -> str:
    """The label-savings table of one metric (a key of METRICS) as Markdown."""
    lines = [
        f"Target {METRICS[metric]} {target:.4f} (best baseline: {best}); {x_name}.",
        "",
        "| method | labels to reach target | saving vs random | saving vs best baseline |",
        "|---|---|---|---|",
    ]
    for row in rows:
        labels = f"{row.labels:.0f}" if row.labels is not None else f"not reached by {row.final_x:.0f}"
        lines.append(f"| {row.method} | {labels} | {row.vs_random} | {row.vs_best_baseline} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Standing:
    """One curve at a total label budget: its point with the most labels within the budget."""

    label: str  # method label (+trainval ...)
    val_per_class: int
    labels: int  # labels of that point (pool + validation the method used)
    mean: float
    std: float
    runs: int

    def name(self) -> str:
        return f"{self.label} (val {self.val_per_class}/class)"


def standings(curves: dict[tuple[int, str], Curve], budget: int) -> list[Standing]:
    """Every curve's point with the most labels <= `budget` (curves keyed by (validation per class, method
    label), x counting every label), best mean first; a curve with no point within the budget is left out."""
    found = []
    for (val_per_class, label), curve in curves.items():
        within = np.flatnonzero((curve.x <= budget) & np.isfinite(curve.mean))
        if is_reference(label) or not len(within):
            continue
        i = within[-1]
        found.append(Standing(label, val_per_class, int(curve.x[i]), float(curve.mean[i]), float(curve.std[i]),
                              int(curve.runs[i])))
    return sorted(found, key=lambda s: (-s.mean, s.labels, s.name()))


def gap_in_std(first: Standing, second: Standing) -> float:
    """(first - second) in units of their pooled run-to-run std; NaN when neither varies (one run each)."""
    pooled = float(np.sqrt((first.std ** 2 + second.std ** 2) / 2))
    difference = first.mean - second.mean
    if pooled > 0:
        return difference / pooled
    return 0.0 if difference == 0 else float("nan")


@dataclass(frozen=True)
class Decision:
    """The decision table's row for one total label budget."""

    budget: int
    best: Standing
    runner_up: Standing | None  # the best curve of another method (other validation sizes of it aside)
    best_fk: Standing | None  # the best of this project's FK methods
    best_baseline: Standing | None  # the best baseline (is_baseline, validation labels counted)
    fk_labels_to_match: float | None  # labels the best-placed FK curve needs to reach best_baseline's mean


def decide(curves: dict[tuple[int, str], Curve], budget: int) -> Decision | None:
    """Which method to use for a total budget of `budget` labels (curves as for `standings`)."""
    ranked = standings(curves, budget)
    if not ranked:
        return None
    best = ranked[0]
    runner_up = next((s for s in ranked if s.label != best.label), None)
    best_fk = next((s for s in ranked if reads_validation(s.label)), None)
    best_baseline = next((s for s in ranked if is_baseline(s.label, validation_counted=True)), None)
    to_match = None
    if best_baseline is not None:
        reach = [labels_to_reach(c.x, c.mean, best_baseline.mean) for (_, label), c in curves.items()
                 if reads_validation(label)]
        to_match = min((r for r in reach if r is not None), default=None)
    return Decision(budget, best, runner_up, best_fk, best_baseline, to_match)


def decision_markdown(decisions: list[Decision], metric: str) -> str:
    """The decision table as Markdown: per total budget the best method, the runner-up and their gap, where
    this project's FK stands, and the labels FK needs to match the best baseline."""
    title = METRICS[metric]

    def cell(s: Standing | None) -> str:
        return "-" if s is None else f"{s.name()}: {s.mean:.3f} ± {s.std:.3f} at {s.labels} ({s.runs} runs)"

    lines = [f"| total labels | best ({title}) | runner-up | gap (std) | best FK | best baseline | "
             f"labels FK needs for the best baseline's {title} |", "|---|---|---|---|---|---|---|"]
    for d in decisions:
        gap = gap_in_std(d.best, d.runner_up) if d.runner_up else float("nan")
        gap_text = f"{gap:.1f}" if np.isfinite(gap) else "-"
        if d.best_baseline is None:
            match = "-"
        elif d.fk_labels_to_match is None:
            match = "not reached"
        else:
            saving = 1 - d.fk_labels_to_match / d.best_baseline.labels
            match = f"{d.fk_labels_to_match:.0f} ({abs(100 * saving):.0f}% {'fewer' if saving >= 0 else 'more'})"
        lines.append(f"| {d.budget} | {cell(d.best)} | {cell(d.runner_up)} | {gap_text} | {cell(d.best_fk)} | "
                     f"{cell(d.best_baseline)} | {match} |")
    return "\n".join(lines)


def confusion_matrix(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised confusion matrix [C, C]: row t is the distribution of predictions for
    true class t (a class absent from `truth` gets a row of zeros)."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (np.asarray(truth), np.asarray(predicted)), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def safe_name(text: str) -> str:
    """A file name made only of letters, digits, '.', '_' and '-' (safe on every file system)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "unnamed"


def aubc(x: np.ndarray, values: np.ndarray, low: float, high: float) -> float:
    """Normalised area under a budget curve on [low, high]: the trapezoid area of `values` against `x`
    (linearly interpolated at the ends, held constant outside the measured range) divided by high - low, so
    a curve at accuracy a everywhere scores a. NaN when the curve has no finite point."""
    finite = np.isfinite(values)
    x, values = np.asarray(x, dtype=float)[finite], np.asarray(values, dtype=float)[finite]
    if not len(x):
        return float("nan")
    if high <= low:
        return float(np.interp(low, x, values))
    inside = (x > low) & (x < high)
    grid = np.concatenate([[low], x[inside], [high]])
    heights = np.interp(grid, x, values)
    return float(np.sum(np.diff(grid) * (heights[1:] + heights[:-1]) / 2) / (high - low))


@dataclass(frozen=True)
class AreaRow:
    """A method's AUBC over a shared label range: mean and std over its runs."""

    label: str
    mean: float
    std: float
    runs: int


def aubc_rows(records: list[dict], metric: str, count_validation: bool = True,
              group: Callable[[dict], tuple] = setting_key, name: Callable[[dict], str] = method_label,
              ) -> dict[tuple, tuple[tuple, list]]:
    """Per group (default: per setting): ((low, high), [AreaRow best first]) — every curve's runs (curves
    named by `name`, default the method label) scored on the label range all of the group's active-learning
    curves cover (the latest first point to the earliest last one), so the areas compare like for like; a
    group whose curves share no label count has no rows. Labels count validation images with `count_validation`."""
    runs: dict[tuple, dict[str, dict[int, dict[int, float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for record in records:
        value = record.get(metric)
        if is_reference(method_label(record)) or value is None:
            continue
        x = record["labelled"] + (record.get("validation_labels", 0) if count_validation else 0)
        runs[group(record)][name(record)][record["run"]][x] = float(value)
    result = {}
    for setting, by_label in runs.items():
        spans = [(min(points), max(points)) for per_run in by_label.values() for points in per_run.values()]
        low, high = max(s[0] for s in spans), min(s[1] for s in spans)
        if low > high:  # no label count every curve covers: no like-for-like area
            continue
        rows = []
        for label, per_run in by_label.items():
            areas = [aubc(np.array(sorted(points)), np.array([points[x] for x in sorted(points)]), low, high)
                     for points in per_run.values()]
            rows.append(AreaRow(label, float(np.nanmean(areas)), float(np.nanstd(areas)), len(areas)))
        result[setting] = ((low, high), sorted(rows, key=lambda r: (-r.mean, r.label)))
    return result


def aubc_markdown(span: tuple[float, float], rows: list[AreaRow], metric: str, count_validation: bool = True) -> str:
    low, high = span
    counted = "every label counted" if count_validation else "pool labels counted"
    lines = [f"AUBC of {METRICS[metric]} (normalised area under the budget curve, {low:g} to {high:g} labels, "
             f"{counted}; mean ± std over runs):", "", "| method | AUBC | runs |", "|---|---|---|"]
    lines += [f"| {r.label} | {r.mean:.4f} ± {r.std:.4f} | {r.runs} |" for r in rows]
    return "\n".join(lines)


def win_matrix(records: list[dict], metric: str, group: Callable[[dict], tuple] = setting_key,
               name: Callable[[dict], str] = method_label, alpha: float = 0.05, count_validation: bool = True,
               ) -> dict[tuple, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per group: (curve names, wins [A, B], budgets compared [A, B]). A wins over B at a label count both
    measured when, over the runs (seeds) both have there (at least 2), A's mean is higher and a paired t-test
    gives p < `alpha`. Labels count every label (pool + validation), or pool labels only without
    `count_validation` (a protocol that hands every method the same validation set)."""
    from scipy.stats import ttest_rel

    values: dict[tuple, dict[str, dict[int, dict[int, float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for record in records:
        value = record.get(metric)
        if is_reference(method_label(record)) or value is None or not np.isfinite(value):
            continue
        x = record["labelled"] + (record.get("validation_labels", 0) if count_validation else 0)
        values[group(record)][name(record)][x][record["run"]] = float(value)
    result = {}
    for key, curves in values.items():
        names = sorted(curves)
        wins = np.zeros((len(names), len(names)), dtype=int)
        compared = np.zeros_like(wins)
        for i, first in enumerate(names):
            for j, second in enumerate(names):
                if i == j:
                    continue
                for x in set(curves[first]) & set(curves[second]):
                    runs = sorted(set(curves[first][x]) & set(curves[second][x]))
                    if len(runs) < 2:
                        continue
                    a = np.array([curves[first][x][r] for r in runs])
                    b = np.array([curves[second][x][r] for r in runs])
                    compared[i, j] += 1
                    differences = a - b
                    if np.ptp(differences) < 1e-12:  # the same difference every run: t is infinite (or 0/0)
                        wins[i, j] += int(differences[0] > 1e-12)
                    elif differences.mean() > 0 and ttest_rel(a, b).pvalue < alpha:
                        wins[i, j] += 1
        result[key] = (names, wins, compared)
    return result


def win_matrix_markdown(names: list[str], wins: np.ndarray, compared: np.ndarray, metric: str) -> str:
    lines = [f"Pairwise wins on {METRICS[metric]}: the row method beats the column method at how many of the label "
             "counts both measured (paired t-test over runs, p < 0.05):", "",
             "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, row in enumerate(names):
        cells = ["-" if i == j else f"{wins[i, j]}/{compared[i, j]}" for j in range(len(names))]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
