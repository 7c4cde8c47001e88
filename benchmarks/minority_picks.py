"""Which images each method labels: the share of minority-class images among its pool picks, per setting and
method (mean ± std over runs), beside the pool's own share.

Minority accuracy can rise because a method finds minority images, or because it adds the fewest, least
informative majority images to a class-balanced set it trains on (every biased pool label dilutes that
set's balance). This table tells the two apart.

    python benchmarks/minority_picks.py --out /work/bench-fair [--dataset fashion-mnist] [--data-root DIR]
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.reports import RESULTS  # noqa: E402
from common.cli import OneLineErrorParser, run_main  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.records import read_metrics  # noqa: E402
from common.storage import load_arrays, load_indices  # noqa: E402


def minority_share(labels: np.ndarray, indices: np.ndarray, minority: list[int]) -> float:
    """The fraction of `indices` whose label is a minority class."""
    return float(np.isin(labels[indices], minority).mean()) if len(indices) else float("nan")


def method_folders(root: Path) -> list[Path]:
    """Every method folder (one that holds a metrics.jsonl) below `root`, in a stable order."""
    return sorted(path.parent for path in root.rglob("metrics.jsonl"))


def picks_of(folder: Path) -> np.ndarray:
    """Every train-split index the run acquired, all iterations together."""
    files = sorted(folder.glob("acquired_*.npy"))
    return np.concatenate([load_indices(path) for path in files]) if files else np.zeros(0, dtype=np.int64)


def minority_classes(folder: Path) -> list[int]:
    """The run's minority classes, from its first metrics record (checked against the results contract)."""
    path = folder / "metrics.jsonl"
    records = read_metrics(path)
    if not records or not isinstance(records[0].get("minority_classes"), list):
        raise UserError(f"{path} names no minority_classes; rerun that run with this version of run.py")
    return records[0]["minority_classes"]


def share_rows(root: Path, labels: np.ndarray) -> dict[tuple[str, str], list[float]]:
    """(setting folder, method) -> the minority share of each run's picks; method "pool" is the biased pool's
    own share (from each run's split)."""
    shares: dict[tuple[str, str], list[float]] = defaultdict(list)
    pools: dict[Path, float] = {}
    for folder in method_folders(root):
        run_folder = folder.parent.parent  # <setting>/run<r>/unsup<u>/<method>
        setting = f"{run_folder.parent.name}, {folder.parent.name}"
        minority = minority_classes(folder)
        shares[(setting, folder.name)].append(minority_share(labels, picks_of(folder), minority))
        if run_folder not in pools and (run_folder / "split.npz").is_file():
            pool = load_arrays(run_folder / "split.npz", ("pool_indices",))["pool_indices"]
            pools[run_folder] = minority_share(labels, pool, minority)
            shares[(setting, "pool")].append(pools[run_folder])
    return shares


def picks_markdown(shares: dict[tuple[str, str], list[float]]) -> str:
    lines = ["# Minority-class images among each method's pool picks",
             "",
             "Share of minority-class images among all pool images a method acquired (mean ± std over runs); "
             "`pool` is the biased pool's own share.",
             "",
             "| setting | method | minority share of picks | runs |", "|---|---|---|---|"]
    def order(key: tuple[str, str]) -> tuple:  # settings in numeric order (val10 before val50), the pool first
        setting, method = key
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", setting)], method != "pool", method

    for (setting, method), values in sorted(shares.items(), key=lambda item: order(item[0])):
        lines.append(f"| {setting} | {method} | {np.mean(values):.3f} ± {np.std(values):.3f} | {len(values)} |")
    return "\n".join(lines) + "\n"


def main(args) -> None:
    root = args.out / args.dataset
    if not method_folders(root):
        raise UserError(f"no results under {root}: give --out the folder run.py wrote to")
    import datasets_available  # noqa: F401, PLC0415  (registers every dataset; torch, only once the flags are good)
    from common.experiment import dataset_arrays  # noqa: PLC0415

    labels = dataset_arrays(args.dataset, args.data_root).train.labels.numpy()
    text = picks_markdown(share_rows(root, labels))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)


def get_args_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the results folder run.py wrote to")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-root", default=None, help="where the dataset lies (default: the dataset's own places)")
    parser.add_argument("--results", type=Path, default=RESULTS / "minority_picks.md", help="the Markdown table")
    return parser


if __name__ == "__main__":
    run_main(main, get_args_parser())
