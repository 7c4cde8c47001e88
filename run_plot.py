"""Learning curves from the results of run.py (DESIGN.md results contract).

Reads every metrics.jsonl under <out>/<dataset>/, groups the records by imbalance,
unsupervised start and method, and draws mean +- 1 std over runs of test and minority-class
accuracy against the number of labelled images.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common import storage  # noqa: E402
from common.cli import DefaultsHelpFormatter, OneLineErrorParser  # noqa: E402
from common.datasets import LOCAL_DATA  # noqa: E402
from common.errors import UserError  # noqa: E402

METRICS = (("test_acc", "test accuracy"), ("minority_acc", "minority-class accuracy"))


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--out", type=Path, default=LOCAL_DATA, help="results folder given to run.py (default: local_data/)")
    parser.add_argument("--imbalance", type=float, default=None, help="only this imbalance ratio")
    return parser


def load_records(root: Path) -> list[dict]:
    """Every record of every metrics.jsonl below root."""
    return [record for path in sorted(root.rglob("metrics.jsonl")) for record in storage.read_jsonl(path)]


def curves(records: list[dict], metric: str) -> dict[tuple, dict[str, np.ndarray]]:
    """(imbalance, unsupervised, method) -> labelled counts, mean, std and run count per count."""
    grouped: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        key = (record["imbalance"], record["unsupervised"], record["method"])
        grouped[key][record["labelled"]].append(record[metric])
    result = {}
    for key, by_count in grouped.items():
        counts = np.array(sorted(by_count))
        values = [np.array(by_count[c], dtype=float) for c in counts]
        result[key] = {
            "labelled": counts,
            "mean": np.array([np.nanmean(v) for v in values]),
            "std": np.array([np.nanstd(v) for v in values]),
            "runs": np.array([len(v) for v in values]),
        }
    return result


def plot(records: list[dict], dataset: str, folder: Path) -> list[Path]:
    """One PNG per (imbalance, unsupervised) with a panel per metric; returns the paths."""
    written = []
    settings = sorted({(r["imbalance"], r["unsupervised"]) for r in records})
    for imbalance, unsupervised in settings:
        figure, axes = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 4.5))
        for axis, (metric, title) in zip(axes, METRICS):
            for (ir, unsup, method), curve in sorted(curves(records, metric).items()):
                if (ir, unsup) != (imbalance, unsupervised):
                    continue
                label = f"{method} ({curve['runs'].min()} runs)"
                line = axis.plot(curve["labelled"], curve["mean"], marker="o", markersize=3, label=label)[0]
                axis.fill_between(curve["labelled"], curve["mean"] - curve["std"], curve["mean"] + curve["std"],
                                  color=line.get_color(), alpha=0.15)
            axis.set_xlabel("labelled pool images")
            axis.set_ylabel(title)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        start = "rotation-pretrained" if unsupervised else "random"
        figure.suptitle(f"{dataset}, imbalance {imbalance:g}, {start} start")
        figure.tight_layout()
        path = folder / f"curves_ir{imbalance:g}_unsup{unsupervised}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    return written


def main(args: argparse.Namespace) -> None:
    root = args.out / args.dataset
    records = load_records(root)
    if args.imbalance is not None:
        records = [r for r in records if r["imbalance"] == args.imbalance]
    if not records:
        raise UserError(f"no metrics.jsonl results under {root}; run run.py first")
    for path in plot(records, args.dataset, root / "plots"):
        print(path)


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    try:
        main(arguments)
    except UserError as error:
        print(f"run_plot.py: error: {error}", file=sys.stderr)
        sys.exit(2)
