"""Learning curves and label-savings tables from the results of run.py.

Reads every metrics.jsonl under <out>/<dataset>/ and, for each setting (imbalance, validation
size, initial model), draws test, minority-class and balanced accuracy against labelled count
(mean +- 1 std over runs, run counts in the legend), the all-train reference when it was run,
and the label-savings table. Writes PNG + PDF plots, a CSV of the aggregated numbers and a
Markdown file of the label-savings tables and the AUBC tables (normalised area under each method's
budget curve over the label range every method covers, mean ± std over runs, per metric) into
<out>/<dataset>/plots/. Federated runs add per-round curves; asynchronous runs
(AAL) add sync vs async accuracy per setting and the mean query wait against the query batch size.
"""
from __future__ import annotations

from common.cli import exit_quietly_on_interrupt

if __name__ == "__main__":
    exit_quietly_on_interrupt()  # before the heavy imports: Ctrl-C while importing is one line too

import argparse
import csv
from pathlib import Path

from common.cli import DefaultsHelpFormatter, OneLineErrorParser, fraction, imbalance_ratio, run_main  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.methods import base_method, is_reference  # noqa: E402
from common.naming import LOCAL_DATA, START_NAMES, imbalance_name, protocol_name  # noqa: E402
from common.reporting import (  # noqa: E402
    METRICS, Curve, aggregate, aubc_markdown, aubc_rows, label_savings, load_queries, load_records, load_rounds,
    query_waits, round_curves, safe_name, savings_markdown,
)


def pyplot():
    """matplotlib's pyplot on the Agg backend, imported at the first plot (so --help and errors answer at once)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def curve_styles(labels) -> dict[str, tuple]:
    """label -> (colour, line style): one colour per method, solid for the method itself and dashed for its
    variants ("entropy+trainval", "entropy+sync"), so 16 curves of 9 methods stay apart (the default colour
    cycle repeats after 10)."""
    bases = sorted({base_method(label) for label in labels})
    palette = pyplot().get_cmap("tab10" if len(bases) <= 10 else "tab20")
    colours = {base: palette(index % palette.N) for index, base in enumerate(bases)}
    return {label: (colours[base_method(label)], "-" if label == base_method(label) else "--") for label in labels}


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--out", type=Path, default=LOCAL_DATA, help="results folder given to run.py (default: local_data/)")
    parser.add_argument("--imbalance", type=imbalance_ratio, default=None, help="only this imbalance ratio")
    parser.add_argument("--count-validation", action="store_true",
                        help="plots' x axis = pool labels + the validation labels a method used (FK, +trainval); "
                             "the label-savings tables always count them")
    parser.add_argument("--metric", choices=("all", *METRICS), default="all",
                        help="the accuracy label savings are computed on: one table per metric (default: all)")
    parser.add_argument("--target", type=fraction, default=None,
                        help="target of the label-savings tables (default: best baseline at its final budget)")
    return parser


def setting_stem(key: tuple, count_validation: bool) -> str:
    imbalance, val_per_class, unsupervised, variant = key
    suffix = "_countval" if count_validation else ""
    return safe_name(f"{protocol_name(imbalance, val_per_class, variant)}_unsup{unsupervised}{suffix}")


def variant_title(variant: str) -> str:
    """A protocol variant as plot titles show it ("fed-c3-..." -> "federated: c3-...")."""
    return variant.replace("fed-", "federated: ", 1).replace("async-", "asynchronous: ", 1)


def draw(setting: tuple, per_metric: dict[str, dict[str, Curve]], savings_text: str, title: str, x_name: str):
    figure, axes = pyplot().subplots(1, len(METRICS), figsize=(6.2 * len(METRICS), 4.8))
    for axis, (metric, metric_title) in zip(axes, METRICS.items()):
        styles = curve_styles(per_metric[metric])
        for method, curve in sorted(per_metric[metric].items()):
            if is_reference(method):
                axis.axhline(curve.mean[0], color="black", linestyle="--", linewidth=1,
                             label=f"all-train {curve.mean[0]:.3f} ({curve.run_label()})")
                continue
            colour, style = styles[method]
            axis.plot(curve.x, curve.mean, marker="o", markersize=3, color=colour, linestyle=style,
                      label=f"{method} ({curve.run_label()})")
            axis.fill_between(curve.x, curve.mean - curve.std, curve.mean + curve.std, color=colour, alpha=0.15)
        axis.set_xlabel(x_name)
        axis.set_ylabel(metric_title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    axes[0].text(0.02, 0.98, savings_text, transform=axes[0].transAxes, fontsize=6.5, va="top", family="monospace",
                 bbox=dict(facecolor="white", alpha=0.85, edgecolor="0.8"))
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def write_csv(path: Path, per_setting: dict[tuple, dict[str, dict[str, Curve]]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["imbalance", "val_per_class", "unsupervised", "method", "metric", "labels", "mean", "std", "runs",
                         "variant"])
        for (imbalance, val_per_class, unsupervised, variant), per_metric in sorted(per_setting.items(), key=str):
            for metric, curves in per_metric.items():
                for method, curve in sorted(curves.items()):
                    for x, mean, std, runs in zip(curve.x, curve.mean, curve.std, curve.runs):
                        writer.writerow([imbalance_name(imbalance), val_per_class, unsupervised, method, metric,
                                         int(x), f"{mean:.6f}", f"{std:.6f}", int(runs), variant])


def report(records: list[dict], dataset: str, folder: Path, count_validation: bool, target: float | None,
           metrics: tuple[str, ...] = tuple(METRICS)) -> list[Path]:
    """Write every plot and table for `records`; returns the written paths. The plots' x axis counts
    validation labels with `count_validation`; the label-savings tables (one per metric in `metrics`)
    always count every label."""
    folder.mkdir(parents=True, exist_ok=True)
    x_name = "labelled pool + validation images" if count_validation else "labelled pool images"
    per_setting = curves_per_setting(records, count_validation)
    counted = curves_per_setting(records, True)
    areas = {metric: aubc_rows(records, metric) for metric in metrics}
    written = []
    for setting, per_metric in sorted(per_setting.items(), key=str):
        tables = [savings_table(counted[setting][metric], target, metric) for metric in metrics]
        imbalance, val_per_class, unsupervised, variant = setting
        start = START_NAMES[unsupervised]
        title = f"{dataset}, imbalance {imbalance:g}, {val_per_class} validation images/class, {start} start"
        if variant:
            title += f"\n{variant_title(variant)}"
        figure = draw(setting, per_metric, tables[0][1], title, x_name)
        stem = setting_stem(setting, count_validation)
        for suffix in (".png", ".pdf"):
            figure.savefig(folder / f"curves_{stem}{suffix}", dpi=120)
            written.append(folder / f"curves_{stem}{suffix}")
        pyplot().close(figure)
        markdown = folder / f"savings_{setting_stem(setting, False)}.md"
        area_tables = [aubc_markdown(*areas[metric][setting], metric) for metric in metrics if setting in areas[metric]]
        markdown.write_text(f"# {title}\n\n" + "\n\n".join([table for table, _ in tables] + area_tables) + "\n")
        written.append(markdown)
    csv_path = folder / ("curves_countval.csv" if count_validation else "curves.csv")
    write_csv(csv_path, per_setting)
    written.append(csv_path)
    return written


def curves_per_setting(records: list[dict], count_validation: bool) -> dict[tuple, dict[str, dict[str, Curve]]]:
    """setting key -> metric -> method label -> Curve."""
    per_setting: dict[tuple, dict[str, dict[str, Curve]]] = {}
    for metric in METRICS:
        for (*setting, method), curve in aggregate(records, metric, count_validation).items():
            per_setting.setdefault(tuple(setting), {m: {} for m in METRICS})[metric][method] = curve
    return per_setting


def savings_table(curves: dict[str, Curve], target: float | None, metric: str) -> tuple[str, str]:
    """(Markdown label-savings table of `metric`, every label counted; the short text boxed in the plot)."""
    try:
        goal, best, rows = label_savings(curves, target, validation_counted=True)
    except ValueError as error:
        return f"No label-savings table for {METRICS[metric]}: {error}.", ""
    table = savings_markdown(goal, best, rows, "labelled pool + validation images", metric)
    short = "\n".join(f"{r.method[:14]:<14} {('%.0f' % r.labels) if r.labels else 'not reached':>11}"
                      f"  {r.vs_random:>11} vs random" for r in rows)
    return table, f"labels (pool + validation) to reach\n{METRICS[metric]} {goal:.3f}:\n{short}"


def draw_rounds(lines: list[dict], folder: Path, dataset: str) -> list[Path]:
    """Per-round curves of federated runs: the global model's test accuracy after every communication
    round (Flower's FedAvg example view), one plot per setting; returns the written paths."""
    per_setting: dict[tuple, dict[str, Curve]] = {}
    for (*setting, method), curve in round_curves(lines).items():
        per_setting.setdefault(tuple(setting), {})[method] = curve
    written = []
    for setting, curves in sorted(per_setting.items(), key=str):
        figure, axis = pyplot().subplots(figsize=(7, 4.8))
        for method, curve in sorted(curves.items()):
            line = axis.plot(curve.x, curve.mean, marker="o", markersize=2, label=f"{method} ({curve.run_label()})")[0]
            axis.fill_between(curve.x, curve.mean - curve.std, curve.mean + curve.std, color=line.get_color(), alpha=0.15)
        written.append(save_line_plot(
            figure, axis, "communication round (all AL cycles)", "global model test accuracy",
            f"{dataset}, imbalance {setting[0]:g}, {variant_title(setting[3])}",
            folder / f"rounds_{setting_stem(setting, False)}.png"))
    return written


def save_line_plot(figure, axis, x_name: str, y_name: str, title: str, path: Path, legend: str = "lower right") -> Path:
    """Label, grid, legend and title a one-panel plot, save it as a PNG and close it."""
    axis.set_xlabel(x_name)
    axis.set_ylabel(y_name)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc=legend)
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot().close(figure)
    return path


def draw_async_accuracy(records: list[dict], folder: Path, dataset: str) -> list[Path]:
    """Asynchronous runs: test accuracy against labelled images, sync (dashed) and async (solid) of each
    strategy in one plot per asynchronous setting (AAL's accuracy figures); returns the written paths."""
    per_setting: dict[tuple, dict[str, Curve]] = {}
    for (*setting, method), curve in aggregate([r for r in records if r.get("asynchronous")], "test_acc").items():
        per_setting.setdefault(tuple(setting), {})[method] = curve
    written = []
    for setting, curves in sorted(per_setting.items(), key=str):
        figure, axis = pyplot().subplots(figsize=(7, 4.8))
        styles = curve_styles(curves)  # a strategy's one colour; sync dashed, async solid
        for method, curve in sorted(curves.items()):
            base, sync = method.removesuffix("+sync"), method.endswith("+sync")
            colour, style = styles[method]
            axis.plot(curve.x, curve.mean, marker="o", markersize=3, linestyle=style, color=colour,
                      label=f"{base} {'sync' if sync else 'async'} ({curve.run_label()})")
        written.append(save_line_plot(
            figure, axis, "labelled pool images", "test accuracy",
            f"{dataset}, imbalance {setting[0]:g}, {variant_title(setting[3])}",
            folder / f"async_accuracy_{setting_stem(setting, False)}.png"))
    return written


def draw_query_wait(lines: list[dict], folder: Path, dataset: str) -> list[Path]:
    """Asynchronous runs: mean query wait (p95 dotted) against the query batch size, one curve per sync or
    async strategy and server count (AAL's query-time figure), one plot per imbalance, validation size and
    initial model; with a CSV of the numbers. Returns the written paths."""
    per_protocol: dict[tuple, dict[tuple, dict]] = {}
    for (imbalance, val_per_class, unsupervised, *curve), by_batch in query_waits(lines).items():
        per_protocol.setdefault((imbalance, val_per_class, unsupervised), {})[tuple(curve)] = by_batch
    written = []
    for protocol, curves in sorted(per_protocol.items(), key=str):
        figure, axis = pyplot().subplots(figsize=(7, 4.8))
        for (method, workers, servers, latency), by_batch in sorted(curves.items(), key=str):
            batches = sorted(by_batch)
            label = f"{method.removesuffix('+sync')} {'sync' if method.endswith('+sync') else 'async'} " \
                    f"w{workers} s{servers}"
            line = axis.plot(batches, [by_batch[b].mean for b in batches], marker="o", label=label)[0]
            axis.plot(batches, [by_batch[b].p95 for b in batches], linestyle=":", color=line.get_color())
        imbalance, val_per_class, unsupervised = protocol
        stem = safe_name(f"{protocol_name(imbalance, val_per_class)}_unsup{unsupervised}")
        path = save_line_plot(figure, axis, "query batch size (images per request)",
                              "query wait, s (mean; dotted: p95)",
                              f"{dataset}, imbalance {imbalance:g}, asynchronous label querying",
                              folder / f"query_wait_{stem}.png", legend="best")
        table = folder / f"query_wait_{stem}.csv"
        with table.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["method", "sync", "workers", "servers", "latency", "query_batch", "mean_wait", "p95_wait",
                             "requests", "runs"])
            for (method, workers, servers, latency), by_batch in sorted(curves.items(), key=str):
                for batch, waits in by_batch.items():
                    writer.writerow([method.removesuffix("+sync"), method.endswith("+sync"), workers, servers,
                                     ":".join(map(imbalance_name, latency)), batch, f"{waits.mean:.3f}",
                                     f"{waits.p95:.3f}", waits.requests, waits.runs])
        written += [path, table]
    return written


def main(args: argparse.Namespace) -> None:
    root = args.out / args.dataset
    records = load_records(root)
    if not records:
        raise UserError(f"no metrics.jsonl results under {root}; run run.py first")
    if args.imbalance is not None:
        found = sorted({r["imbalance"] for r in records})
        records = [r for r in records if r["imbalance"] == args.imbalance]
        if not records:
            raise UserError(f"no results for --imbalance {imbalance_name(args.imbalance)} under {root} "
                            f"(found: {', '.join(map(imbalance_name, found))})")
    metrics = tuple(METRICS) if args.metric == "all" else (args.metric,)
    for path in report(records, args.dataset, root / "plots", args.count_validation, args.target, metrics):
        print(path)
    rounds = [line for line in load_rounds(root) if args.imbalance is None or line["imbalance"] == args.imbalance]
    for path in draw_rounds(rounds, root / "plots", args.dataset):
        print(path)
    for path in draw_async_accuracy(records, root / "plots", args.dataset):
        print(path)
    queries = [line for line in load_queries(root) if args.imbalance is None or line["imbalance"] == args.imbalance]
    for path in draw_query_wait(queries, root / "plots", args.dataset):
        print(path)


if __name__ == "__main__":
    run_main(main, get_args_parser())
