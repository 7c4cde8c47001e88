"""The fair comparison on biased Fashion-MNIST: every method at every validation size, with and
without training on the validation labels, every label counted, and the decision table.

Each cell of the grid is one run.py command per seeded run (resumable: run.py skips finished
iterations and folders another process is working on). The jobs go tier by tier, and within a
tier run by run, so a grid stopped early still has every cell of the finished tiers with the
same number of runs. `--workers 2` runs two jobs at once (one CPU thread each).

    python benchmarks/fair_comparison.py --workers 2            # every tier, then the report
    python benchmarks/fair_comparison.py --tier 1 --workers 2   # the decision-table cells only
    python benchmarks/fair_comparison.py --cell rotation-start --runs 3   # one cell, its first 3 runs
    python benchmarks/fair_comparison.py --report-only          # tables and plots from what exists
    python benchmarks/fair_comparison.py --list                 # the jobs, without running them
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.cli import OneLineErrorParser, positive_int  # noqa: E402

COMMON = ("--dataset", "fashion-mnist", "--iterations", "8", "--threads", "1", "--quiet")
BUDGET = "125"  # labels per iteration; the cold start takes 250 (total budgets up to 2000)
BASELINES = "random,entropy,badge"
NEW_BASELINES = "typiclust,probcover,direct"  # TypiClust, ProbCover, DIRECT (docs/method.md), in the decision-table cells
COLD_START = "random,entropy,coreset,badge,fk-nn-kfold,fk-nn-split,typiclust,probcover,direct"
FK_PLAIN = "fk-nn"
FK_WITH_VALIDATION = "fk-nn-split,fk-nn-kfold"  # fk-nn +trainval is the naive reference, run with the baselines
BEST_FK_WITH_VALIDATION = "fk-nn-split"  # the variant the wider checks use (the best of the first runs at 10/class)
CONFUSABLE_MINORITY = "2,4,6"  # pullover, coat, shirt: easily taken for T-shirts (0) and each other
RUNS = 5


@dataclass(frozen=True)
class Cell:
    """One curve family of the grid: a run.py setting and the methods run on it."""

    name: str
    tier: int
    arguments: tuple[str, ...]
    runs: int = RUNS

    def command(self, out: Path, run: int) -> list[str]:
        return [sys.executable, str(REPO / "run.py"), *COMMON, *self.arguments,
                "--run-start", str(run), "--run-stop", str(run + 1), "--out", str(out)]


def imbalance(ratio: int, val_per_class: int, methods: str, *extra: str, budget: str = BUDGET) -> tuple[str, ...]:
    return ("--imbalance", str(ratio), "--val-per-class", str(val_per_class), "--budget", budget, "--methods", methods,
            *extra)


def ir100(val_per_class: int, methods: str, *extra: str, budget: str = BUDGET) -> tuple[str, ...]:
    return imbalance(100, val_per_class, methods, *extra, budget=budget)


VALIDATION_SIZES = (10, 50, 100, 1000)  # images per class


def validation_tier(val_per_class: int, mc_dropout: bool) -> int:
    """1: what the decision table reads (10-100 per class, every method but MC dropout); 2: MC dropout
    (about 8x the cost of the others); 3: 1000 per class (+trainval trains on 10 000 images 9 times
    a run: about 15 CPU minutes per run and method)."""
    if val_per_class >= 1000:
        return 3
    return 2 if mc_dropout else 1


def grid() -> list[Cell]:
    """Every cell, in priority order within its tier."""
    cells = [  # tier 3 first of all its cells: the starts (rotation-pretrained, and the all-train ceiling)
        Cell("rotation-start", 3, ir100(100, f"{BASELINES},{FK_PLAIN},{BEST_FK_WITH_VALIDATION}",
                                        "--unsupervised", "1")),
        Cell("rotation-start-trainval", 3, ir100(100, f"{BASELINES},{FK_PLAIN}", "--train-on-validation",
                                                 "--unsupervised", "1")),
        Cell("all-train", 3, ir100(100, "all-train")),
    ]
    cells += [  # tier 1: the cold start, no validation set given (total budgets 250-2000: 8 x 250 labels)
        Cell("cold-start", 1, ir100(0, COLD_START, budget="250")),
        Cell("cold-start-mc", 2, ir100(0, "var-ratio-mc", budget="250")),
    ]
    for val in VALIDATION_SIZES:  # every method at every validation size, each also +trainval
        plain, mc = validation_tier(val, False), validation_tier(val, True)
        new = f",{NEW_BASELINES}" if plain == 1 else ""
        cells += [
            Cell(f"val{val}", plain, ir100(val, f"{BASELINES}{new},{FK_PLAIN},{FK_WITH_VALIDATION}")),
            Cell(f"val{val}-trainval", plain, ir100(val, f"{BASELINES}{new},{FK_PLAIN}", "--train-on-validation")),
            Cell(f"val{val}-mc", mc, ir100(val, "var-ratio-mc")),
            Cell(f"val{val}-mc-trainval", mc, ir100(val, "var-ratio-mc", "--train-on-validation")),
        ]
    cells += [  # tier 2: the conclusions checked on another minority set and imbalance ratio (3 runs)
        Cell("confusable-minority", 2, (*ir100(10, f"random,entropy,{FK_PLAIN},{BEST_FK_WITH_VALIDATION}"),
                                        "--minority-classes", CONFUSABLE_MINORITY), runs=3),
        Cell("confusable-minority-trainval", 2, (*ir100(10, "entropy", "--train-on-validation"),
                                                 "--minority-classes", CONFUSABLE_MINORITY), runs=3),
        Cell("ir20", 2, imbalance(20, 10, f"random,entropy,{FK_PLAIN},{BEST_FK_WITH_VALIDATION}"), runs=3),
        Cell("ir20-trainval", 2, imbalance(20, 10, "entropy", "--train-on-validation"), runs=3),
    ]
    return sorted(cells, key=lambda cell: cell.tier)  # stable: the order above within a tier


def jobs(cells: list[Cell], tiers: set[int] | None, max_runs: int = RUNS,
         names: set[str] | None = None) -> list[tuple[Cell, int]]:
    """(cell, run) pairs: tier by tier, and within a tier run 0 of every cell, then run 1...; at most
    `max_runs` runs per cell; only the named cells when `names` is given."""
    chosen = [c for c in cells if (tiers is None or c.tier in tiers) and (names is None or c.name in names)]
    return [(cell, run) for tier in sorted({c.tier for c in chosen}) for run in range(min(RUNS, max_runs))
            for cell in chosen if cell.tier == tier and run < cell.runs]


def run_job(job: tuple[Cell, int], out: Path) -> int:
    cell, run = job
    command = cell.command(out, run)
    print(f"[{cell.name} run{run}] $ {' '.join(command[1:])}", flush=True)
    return subprocess.run(command, cwd=REPO).returncode


def run_grid(todo: list[tuple[Cell, int]], out: Path, workers: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        codes = list(pool.map(lambda job: run_job(job, out), todo))
    return [f"{cell.name} run{run}" for (cell, run), code in zip(todo, codes, strict=True) if code]


def main() -> None:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "local_data" / "bench")
    parser.add_argument("--tier", type=positive_int, action="append", help="run only these tiers (1 = decision table)")
    parser.add_argument("--cell", action="append", metavar="NAME",
                        help="run only these cells (names as --list prints them)")
    parser.add_argument("--workers", type=positive_int, default=2, help="jobs at once, one CPU thread each")
    parser.add_argument("--runs", type=positive_int, default=RUNS, help=f"at most this many runs per cell ({RUNS})")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--list", action="store_true", help="print the jobs and stop")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="where the plots and per-setting tables go")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "fair_comparison.md",
                        help="where the decision tables go")
    args = parser.parse_args()
    cells = grid()
    unknown = sorted(set(args.cell or ()) - {cell.name for cell in cells})
    if unknown:
        parser.error(f"no cell named {', '.join(repr(name) for name in unknown)}; --list prints them")
    todo = jobs(cells, set(args.tier) if args.tier else None, args.runs, set(args.cell) if args.cell else None)
    if not todo and not args.report_only:
        parser.error("no job matches the chosen --tier and --cell (--list without them prints every cell)")
    if args.list:
        for cell, run in todo:
            print(f"tier {cell.tier} {cell.name} run{run}: {' '.join(cell.command(args.out, run)[2:])}")
        return
    if not args.report_only:
        failed = run_grid(todo, args.out, args.workers)
        if failed:
            sys.exit(f"failed jobs (rerun to resume): {', '.join(failed)}")
    if not any((args.out / "fashion-mnist").rglob("metrics.jsonl")):
        parser.error(f"no results under {args.out / 'fashion-mnist'} to report on; run the grid first")
    from benchmarks.fair_report import write_report  # noqa: PLC0415  (matplotlib only for the report)

    write_report(args.out, args.docs, args.results)


if __name__ == "__main__":
    main()
