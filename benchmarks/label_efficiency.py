"""Label efficiency on a biased pool: accuracy per labelled count and seconds per acquisition.

Default protocol (the label-efficiency grid): Fashion-MNIST, imbalance 100, 5 runs, 8 iterations x 125 labels,
LeNet with the dataset's schedule; methods: the random and uncertainty baselines, core-set, BADGE,
VAAL and the FK variants (fk-cov and fk-mi take about 25x fk-nn's acquisition time).
Runs go through run.py (so they resume after a kill); the table is printed as Markdown and
written beside the results.

    python benchmarks/label_efficiency.py [--runs 5] [--epochs 50] [--out local_data/bench]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.reporting import (  # noqa: E402
    aggregate, aubc_markdown, aubc_rows, load_records, win_matrix, win_matrix_markdown,
)

DEFAULT_METHODS = "random,entropy,var-ratio-mc,coreset,badge,vaal,fk-features,fk-nn,fk-cov,fk-mi"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--imbalance", default="100")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--budget", type=int, default=125)
    parser.add_argument("--epochs", type=int, default=None, help="default: the dataset's schedule (50)")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--unsupervised", default="0")
    parser.add_argument("--out", type=Path, default=REPO / "local_data" / "bench")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", default="1", help="CPU threads per process (1: robust on a shared machine)")
    parser.add_argument("--val-per-class", type=int, default=1000)
    parser.add_argument("--report-only", action="store_true", help="only print the table of existing results")
    return parser


def run_experiments(args: argparse.Namespace) -> None:
    command = [
        sys.executable, str(REPO / "run.py"), "--dataset", args.dataset, "--imbalance", args.imbalance,
        "--runs", str(args.runs), "--iterations", str(args.iterations), "--budget", str(args.budget),
        "--methods", args.methods, "--unsupervised", args.unsupervised, "--out", str(args.out),
        "--threads", args.threads, "--val-per-class", str(args.val_per_class),
    ]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    if args.data_root:
        command += ["--data-root", args.data_root]
    subprocess.run(command, check=True, cwd=REPO)


def table(records: list[dict], methods: list[str], metric: str, title: str) -> str:
    """Markdown table: one row per labelled count, mean +- std over runs for each method."""
    by_method = {key[-1]: curve for key, curve in aggregate(records, metric).items()}
    counts = sorted({int(c) for curve in by_method.values() for c in curve.x})
    lines = [f"| {title} | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for count in counts:
        cells = []
        for method in methods:
            curve = by_method.get(method)
            where = np.flatnonzero(curve.x == count) if curve else []
            if len(where) == 0:
                cells.append("-")
                continue
            i = where[0]
            cells.append(f"{curve.mean[i]:.3f} ± {curve.std[i]:.3f}")
        lines.append(f"| {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seconds_row(records: list[dict], methods: list[str]) -> str:
    cells = []
    for method in methods:
        seconds = [r["acquire_seconds"] for r in records if r["method"] == method and r["iteration"] > 0]
        cells.append(f"{np.mean(seconds):.2f}" if seconds else "-")
    return "| acquisition s (b>0) | " + " | ".join(cells) + " |"


def runs_row(records: list[dict], methods: list[str]) -> str:
    """How many seeded runs each method's numbers average (methods may have different counts)."""
    counts = [len({r["run"] for r in records if r["method"] == method}) for method in methods]
    return "| runs | " + " | ".join(str(count) for count in counts) + " |"


def summary(records: list[dict], metric: str) -> str:
    """AUBC and the pairwise win matrix of every method on `metric`, pool labels counted (every method is handed
    the same validation set here)."""
    everything = lambda _record: ()  # noqa: E731  (one group: this protocol)
    span, rows = aubc_rows(records, metric, count_validation=False, group=everything)[()]
    names, wins, compared = win_matrix(records, metric, group=everything, count_validation=False)[()]
    return aubc_markdown(span, rows, metric, count_validation=False) + "\n\n" + win_matrix_markdown(
        names, wins, compared, metric)


def main() -> None:
    args = get_args_parser().parse_args()
    if not args.report_only:
        run_experiments(args)
    methods = args.methods.split(",")
    imbalances = {float(i) for i in args.imbalance.split(",")}
    starts = {int(u) for u in args.unsupervised.split(",")}
    records = [
        r for r in load_records(args.out / args.dataset)
        if r["method"] in methods and r["imbalance"] in imbalances and r["unsupervised"] in starts
        and r.get("val_per_class") == args.val_per_class and not r.get("train_on_validation")
    ]
    runs = len({r["run"] for r in records})
    report = "\n\n".join([
        f"{args.dataset}, imbalance {args.imbalance}, up to {runs} runs, unsupervised {args.unsupervised}",
        table(records, methods, "test_acc", "labelled: test acc"),
        table(records, methods, "minority_acc", "labelled: minority acc") + "\n" + seconds_row(records, methods)
        + "\n" + runs_row(records, methods),
        *(summary(records, metric) for metric in ("test_acc", "minority_acc")),
    ])
    print(report)
    (args.out / f"label_efficiency_{args.dataset}.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
