"""AAL's claims under its own protocol, scaled to 2 CPU cores: asynchronous querying is as accurate as
synchronous (within about a point), and its query time stays flat while the synchronous one grows.

Protocol (Huang et al., IJCAI 2021, on CIFAR-10 with VGG-16; here Fashion-MNIST with LeNet):
- a balanced pool (`--imbalance 1`), a 10 % starting set (5000 labels) the initial model is trained on;
- 10 workers on random equal shards, annotator latency uniform 0-60 s (simulated clock), query batch 25;
- AAL's multi-server settings, 10x smaller: 1 server x 2 trainings of 1000 labels, 2 servers x 4 of 500,
  4 servers x 8 of 250 (2000 labels after the starting set in each);
- entropy for every worker (DA) at 1, 2 and 4 servers, AAL's round-robin (RA: margin, least-confidence,
  entropy) at 2 servers; each asynchronous and synchronous.
Scaled: the dataset, LeNet, --epochs per server training (AAL: 200, from scratch), the batch.

Runs go through run.py (one process per setting, `--runs` seeded runs each; they resume after a kill;
`--workers 2` runs two settings side by side). Tables are printed and written to benchmarks/results/aal.md.

    python benchmarks/aal.py [--runs 3] [--workers 2] [--epochs 10] [--out local_data/bench-aal] [--report-only]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.async_query import clock_table  # noqa: E402
from benchmarks.reports import add_run_arguments, run_and_report, run_commands  # noqa: E402
from common.reporting import load_queries, load_records  # noqa: E402

WORKERS, BATCH = 10, 25
SERVERS = {1: (2, 1000), 2: (4, 500), 4: (8, 250)}  # servers -> (trainings, labels between trainings)
ASSIGNMENTS = {"entropy DA": ["--assignment", "DA", "--methods", "entropy"], "RA": ["--assignment", "RA"]}


def settings() -> dict[str, list[str]]:
    """Setting name -> run.py flags beyond the common ones."""
    found = {}
    for assignment, flags in ASSIGNMENTS.items():
        for servers, (trainings, threshold) in SERVERS.items():
            if assignment == "RA" and servers != 2:
                continue
            for sync in (False, True):
                name = f"{assignment}, {servers} server{'s' if servers > 1 else ''}, {'sync' if sync else 'async'}"
                found[name] = [*flags, "--servers", str(servers), "--trainings", str(trainings), "--train-threshold",
                               str(threshold), *(["--sync"] if sync else [])]
    return found


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--initial-labels", default="5000", help="the starting set (AAL: 10 %% of the pool)")
    parser.add_argument("--epochs", default="10", help="training epochs per server training (the dataset's: 50)")
    return add_run_arguments(parser, REPO / "local_data" / "bench-aal")


def commands(args: argparse.Namespace) -> list[list[str]]:
    common = [sys.executable, str(REPO / "run.py"), "--dataset", args.dataset, "--imbalance", "1",
              "--initial-labels", args.initial_labels, "--async-workers", str(WORKERS), "--query-batch", str(BATCH),
              "--latency", "0:60", "--epochs", args.epochs, "--runs", str(args.runs), "--out", str(args.out),
              "--threads", "1", "--quiet"]
    return [[*common, *flags] for flags in settings().values()]


def run_experiments(args: argparse.Namespace) -> None:
    run_commands(commands(args), args.workers, "aal", REPO)


def setting_of(line: dict) -> str:
    assignment = "RA" if line["assignment"] == "RA" else "entropy DA"
    servers = line["servers"]
    return f"{assignment}, {servers} server{'s' if servers > 1 else ''}, {'sync' if line['sync'] else 'async'}"


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "—"


def runs_table(args: argparse.Namespace) -> tuple[str, dict[str, list[float]]]:
    root = args.out / args.dataset
    records = [r for r in load_records(root) if r.get("asynchronous")]
    queries = load_queries(root)
    lines = ["| setting | runs | final accuracy | average accuracy over trainings | mean query wait s |",
             "|---|---|---|---|---|"]
    averages = {}
    for name in settings():
        by_run: dict[int, list[dict]] = {}
        for record in records:
            if setting_of(record) == name:
                by_run.setdefault(record["run"], []).append(record)
        finished = [sorted(rs, key=lambda r: r["model_version"]) for rs in by_run.values()]
        finished = [rs for rs in finished if len(rs) == SERVERS[rs[0]["servers"]][0]]
        waits = [q["simulated_wait"] for q in queries if setting_of(q) == name]
        averages[name] = [float(np.mean([r["test_acc"] for r in rs])) for rs in finished]
        lines.append(f"| {name} | {len(finished)} | {mean_std([rs[-1]['test_acc'] for rs in finished])} | "
                     f"{mean_std(averages[name])} | {np.mean(waits) if waits else float('nan'):.0f} |")
    return "\n".join(lines), averages


def claim_lines(averages: dict[str, list[float]]) -> list[str]:
    """Async minus sync average accuracy per setting (AAL: equal within about a point)."""
    lines = ["| setting | async − sync, average accuracy (mean ± s.e.) | within a point? |", "|---|---|---|"]
    for name in settings():
        if not name.endswith("async"):
            continue
        a, s = averages.get(name, []), averages.get(name.removesuffix("async") + "sync", [])
        if not a or not s:
            continue
        error = (np.var(a) / len(a) + np.var(s) / len(s)) ** 0.5
        difference = np.mean(a) - np.mean(s)
        lines.append(f"| {name.removesuffix(', async')} | {difference:+.3f} ± {error:.3f} | "
                     f"{'yes' if abs(difference) <= 0.01 + 2 * error else 'no'} |")
    return lines


def report(args: argparse.Namespace) -> str:
    table, averages = runs_table(args)
    records = load_records(args.out / args.dataset)
    pool = records[0]["pool_size"] if records else 50000
    return "\n".join([
        f"# AAL under its own protocol: {args.dataset}, balanced pool, starting set {args.initial_labels}, "
        f"{WORKERS} workers, latency 0-60 s", "",
        f"`python benchmarks/aal.py --runs {args.runs}`: query batch {BATCH}; 1 / 2 / 4 servers with 2 / 4 / 8 "
        f"trainings of 1000 / 500 / 250 labels; {args.epochs} epochs per training; seeded runs, mean ± std.", "",
        table, "", "## AAL's claim: asynchronous as accurate as synchronous", "", *claim_lines(averages), "",
        "## Query wait against the batch, from the clock alone (the same code the runs use)", "",
        clock_table(pool - int(args.initial_labels), int(args.initial_labels)), "",
    ])


if __name__ == "__main__":
    run_and_report(get_args_parser(), run_experiments, report, "aal")
