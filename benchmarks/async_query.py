"""Asynchronous vs synchronous label querying (AAL) on Fashion-MNIST, beside AAL's figures.

Runs (one Ray session, actors on this machine): 10 workers, annotator latency uniform 0-60 s on the
simulated clock, query batch 25 (threshold 250), 6 trainings (1500 labels), LeNet with the dataset's
schedule shortened to --epochs, the dataset's protocol (imbalance 100):
  entropy DA async with 1, 2 and 4 servers; RA (entropy, least-confidence, margin) and fk-nn DA async
  with 2 servers; each of the three also synchronous (a synchronous run never overlaps trainings, so
  its results do not depend on the server count).
Then, from the clock alone (no training: the waits depend only on the timeline), the mean and p95
query wait for query batches 25-250 with 1/2/4 servers, sync vs async.

Runs go through run.py's functions, so they resume after a kill (wall seconds are kept only for runs
that ran to the end in one go). Tables are printed and written to benchmarks/results/async_query.md.

    python benchmarks/async_query.py [--epochs 10] [--out local_data/bench-async] [--report-only]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import run as run_module  # noqa: E402
from asynchronous import clock  # noqa: E402
from asynchronous.executor import connect, shutdown  # noqa: E402
from benchmarks.reports import run_and_report  # noqa: E402
from common.reporting import load_queries, load_records, method_label  # noqa: E402

WORKERS, BATCH, TRAININGS, LATENCY = 10, 25, 6, (0.0, 60.0)
SETTINGS = {  # name -> run.py flags beyond the common ones
    "entropy DA async, 1 server": ["--methods", "entropy", "--servers", "1"],
    "entropy DA async, 2 servers": ["--methods", "entropy", "--servers", "2"],
    "entropy DA async, 4 servers": ["--methods", "entropy", "--servers", "4"],
    "entropy DA sync": ["--methods", "entropy", "--servers", "2", "--sync"],
    "RA async, 2 servers": ["--assignment", "RA", "--servers", "2"],
    "RA sync": ["--assignment", "RA", "--servers", "2", "--sync"],
    "fk-nn DA async, 2 servers": ["--methods", "fk-nn", "--servers", "2"],
    "fk-nn DA sync": ["--methods", "fk-nn", "--servers", "2", "--sync"],
}
# AAL (IJCAI 2021), CIFAR-10, 10 workers, VGG-16, 0-60 s latency (read off its figures).
AAL = ["| AAL, CIFAR-10 | average accuracy 0.818 / 0.833 / 0.843 with 1 / 2 / 4 servers |",
       "| AAL, CIFAR-10 | average query time: sync about 740-1340 s (growing with the batch), async about 135 s |",
       "| AAL, CIFAR-100 / mini-ImageNet | sync 1600-3550 s / 3800-8400 s, async about 150 s / under 200 s |"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", default="10", help="training epochs per server training (the dataset's schedule: 50)")
    parser.add_argument("--out", type=Path, default=REPO / "local_data" / "bench-async")
    parser.add_argument("--report-only", action="store_true", help="only print the tables of existing results")
    return parser


def common_flags(args: argparse.Namespace) -> list[str]:
    return ["--dataset", args.dataset, "--async-workers", str(WORKERS), "--query-batch", str(BATCH),
            "--trainings", str(TRAININGS), "--latency", ":".join(map(str, LATENCY)), "--epochs", args.epochs,
            "--runs", "1", "--threads", "1", "--quiet", "--out", str(args.out)]


def run_experiments(args: argparse.Namespace) -> None:
    walls_path = args.out / "wall_seconds.json"
    walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    started = connect()
    try:
        for name, flags in SETTINGS.items():
            began = time.perf_counter()
            run_module.main(run_module.get_args_parser().parse_args([*common_flags(args), *flags]))
            if name not in walls:
                walls[name] = round(time.perf_counter() - began, 1)
                walls_path.write_text(json.dumps(walls, indent=1))
    finally:
        if started:
            shutdown()


def setting_of(line: dict) -> str:
    """The SETTINGS name a metrics or queries line belongs to."""
    base = method_label(line).removesuffix("+sync")
    method = "RA" if line["assignment"] == "RA" else f"{base} DA"
    if line["sync"]:
        return f"{method} sync"
    return f"{method} async, {line['servers']} server{'s' if line['servers'] > 1 else ''}"


def runs_table(args: argparse.Namespace) -> str:
    root = args.out / args.dataset
    records = [r for r in load_records(root) if r.get("asynchronous")]
    queries = load_queries(root)
    walls_path = args.out / "wall_seconds.json"
    walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    header = " | ".join(f"v{k} labelled: acc" for k in range(1, TRAININGS + 1))
    lines = [f"| setting | {header} | mean acc | final minority acc | mean wait s | p95 wait s | simulated end s "
             f"| requests per model version | wall s |", "|---|" + "---|" * (TRAININGS + 8)]
    for name in SETTINGS:
        mine = sorted((r for r in records if setting_of(r) == name), key=lambda r: r["model_version"])
        waits = [q["simulated_wait"] for q in queries if setting_of(q) == name]
        if not mine:
            lines.append(f"| {name} | " + " | ".join(["—"] * (TRAININGS + 7)) + " |")
            continue
        cells = [f"{r['labelled']}: {r['test_acc']:.3f}" for r in mine]
        versions = Counter(q["model_version"] for q in queries if setting_of(q) == name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean([r['test_acc'] for r in mine]):.3f} | "
                     f"{mine[-1]['minority_acc']:.3f} | {np.mean(waits):.1f} | {np.percentile(waits, 95):.1f} | "
                     f"{mine[-1]['published_at']:.0f} | "
                     f"{' '.join(f'v{v}: {n}' for v, n in sorted(versions.items()))} | {walls.get(name, '—')} |")
    return "\n".join(lines)


def clock_table(pool_size: int, initial_labels: int = 0) -> str:
    """Mean / p95 simulated query wait from the clock alone, for several batch sizes and server counts; the
    `pool_size` images are shared by the workers, the starting set's `initial_labels` only lengthen trainings."""
    lines = ["| query batch (threshold) | async 1 server | async 2 servers | async 4 servers | sync |",
             "|---|---|---|---|---|"]
    for batch in (25, 50, 100, 250):
        cells = []
        for servers, sync in ((1, False), (2, False), (4, False), (1, True)):
            timing = clock.Asynchrony(workers=WORKERS, servers=servers, query_batch=batch, threshold=batch * WORKERS,
                                      trainings=TRAININGS, sync=sync, latency=LATENCY)
            waits = [item.issued - item.ready + item.latency
                     for kind, item, _ in clock.simulate(timing, [pool_size // WORKERS] * WORKERS, seed=0,
                                                                initial_labels=initial_labels)
                     if kind == clock.ASK]
            cells.append(f"{np.mean(waits):.0f} / {np.percentile(waits, 95):.0f} s")
        lines.append(f"| {batch} ({batch * WORKERS}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(args: argparse.Namespace) -> str:
    records = load_records(args.out / args.dataset)
    pool = records[0]["pool_size"] if records else 25250
    command = "python benchmarks/async_query.py" + (f" --epochs {args.epochs}" if args.epochs != "10" else "")
    return "\n".join([
        f"# Asynchronous label querying: {args.dataset}, {WORKERS} workers, latency 0-60 s (simulated clock)", "",
        f"`{command}`: query batch {BATCH} (threshold {BATCH * WORKERS}), {TRAININGS} trainings, "
        f"{args.epochs} epochs per training, imbalance {records[0]['imbalance'] if records else '?'}, seed 0, "
        "one run each. vK: model version K (one server training): labelled images it trained on and its test "
        "accuracy. Waits: simulated seconds from a worker being ready to ask until its labels arrive. Wall: "
        "seconds on this machine (2 CPU cores shared with another benchmark; includes starting 13-15 Ray "
        "actors, about 40-60 s).", "",
        runs_table(args), "",
        "## Query wait from the clock alone (no training; the same code the runs use)", "",
        f"{WORKERS} workers, latency 0-60 s, {TRAININGS} trainings, threshold = batch x workers, training "
        f"{clock.TRAIN_TIME} simulated s per labelled image; mean / p95 over every request.", "",
        clock_table(pool), "",
        "## AAL's reported figures (beside, not comparable one to one: CIFAR-10, VGG-16, a GPU)", "",
        "| source | figure |", "|---|---|", *AAL, "",
    ])


if __name__ == "__main__":
    run_and_report(get_args_parser(), run_experiments, report, "async_query")
