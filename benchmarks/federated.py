"""Federated AL on a globally imbalanced non-IID pool, and the same methods centralised on the same pool.

Default protocol (FairFAL's setting on Fashion-MNIST): 10 clients, Dirichlet 0.1, global
imbalance 20 (minority classes 5-9 thinned jointly, as in the central protocol), 4 cycles x 250 labels,
5 rounds x 2 local epochs of FedAvg, LeNet; random, entropy, ksas, ksas+kcfu, logo, fk-nn federated;
random, entropy, badge, fk-nn centralised (same split, same union pool). Runs go through run.py, so
they resume after a kill; the tables are printed as Markdown and written to
benchmarks/results/federated.md.

    python benchmarks/federated.py [--runs 3] [--out local_data/bench-federated] [--report-only]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.reports import run_and_report  # noqa: E402
from common.reporting import (  # noqa: E402
    aggregate, label_savings, load_records, load_rounds, method_label, savings_markdown,
)

FEDERATED_METHODS = "random,entropy,ksas,logo,fk-nn"
KCFU_METHODS = "ksas"
CENTRAL_METHODS = "random,entropy,badge,fk-nn"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--imbalance", default="20")
    parser.add_argument("--clients", default="10")
    parser.add_argument("--alpha", default="0.1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--iterations", default="4")
    parser.add_argument("--budget", default="250")
    parser.add_argument("--rounds", default="25", help="rounds per cycle: 25 x 2 local epochs = the 50 epochs central training gives")
    parser.add_argument("--local-epochs", default="2")
    parser.add_argument("--epochs", default=None, help="central training epochs (default: the dataset's, 50)")
    parser.add_argument("--out", type=Path, default=REPO / "local_data" / "bench-federated")
    parser.add_argument("--report-only", action="store_true", help="only print the tables of existing results")
    return parser


def run_py(args: argparse.Namespace, *flags: str) -> None:
    command = [sys.executable, str(REPO / "run.py"), "--dataset", args.dataset, "--imbalance", args.imbalance,
               "--runs", str(args.runs), "--iterations", args.iterations, "--budget", args.budget,
               "--out", str(args.out), "--threads", "1", "--quiet", *flags]
    subprocess.run(command, check=True, cwd=REPO)


def run_experiments(args: argparse.Namespace) -> None:
    federated = ["--clients", args.clients, "--partition", "dirichlet", "--alpha", args.alpha, "--rounds", args.rounds,
                 "--local-epochs", args.local_epochs, "--fed-algo", "fedavg"]
    run_py(args, *federated, "--methods", FEDERATED_METHODS)
    run_py(args, *federated, "--methods", KCFU_METHODS, "--local-loss", "kcfu")
    run_py(args, "--methods", CENTRAL_METHODS, *(["--epochs", args.epochs] if args.epochs else []))


def label(record: dict) -> str:
    return ("fed " if record.get("federation") else "central ") + method_label(record)


def accuracy_table(records: list[dict], metric: str, title: str) -> str:
    curves = {label(r): None for r in records}
    by_label = {}
    for name in curves:
        chosen = [r for r in records if label(r) == name]
        (curve,) = aggregate(chosen, metric).values()
        by_label[name] = curve
    xs = sorted({int(x) for c in by_label.values() for x in c.x})
    lines = [f"### {title}", "", "| method | " + " | ".join(map(str, xs)) + " | runs |",
             "|---|" + "---|" * (len(xs) + 1)]
    for name, curve in sorted(by_label.items()):
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(curve.mean, curve.std)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {curve.run_label()} |")
    return "\n".join(lines)


def savings_table(records: list[dict], metric: str, federated: bool) -> str:
    """Label savings among the federated (or the central) methods, on `metric`; FK is never the
    reference (it reads validation labels), every other method may be."""
    chosen = [r for r in records if bool(r.get("federation")) == federated]
    curves = {}
    for name in sorted({method_label(r) for r in chosen}):
        (curve,) = aggregate([r for r in chosen if method_label(r) == name], metric).values()
        curves[name] = curve
    target, best, rows = label_savings(curves)
    kind = "federated" if federated else "central"
    return f"{kind}, {metric}: " + savings_markdown(target, best, rows, "labelled pool images")


def cost_table(records: list[dict], rounds: list[dict]) -> str:
    lines = ["| method | s / acquisition | s / round | bytes sent per client per cycle |", "|---|---|---|---|"]
    for name in sorted({label(r) for r in records}):
        chosen = [r for r in records if label(r) == name]
        per_round = [line["seconds"] for line in rounds if label(line) == name]
        bytes_ = [r["bytes_per_client"] for r in chosen if "bytes_per_client" in r]
        lines.append(f"| {name} | {np.mean([r['acquire_seconds'] for r in chosen]):.2f} | "
                     f"{np.mean(per_round):.2f} | {np.mean(bytes_) / 1e6:.2f} MB |" if per_round else
                     f"| {name} | {np.mean([r['acquire_seconds'] for r in chosen]):.2f} | — | — |")
    return "\n".join(lines)


def report(args: argparse.Namespace) -> str:
    root = args.out / args.dataset
    records = [r for r in load_records(root) if str(r["imbalance"]).rstrip("0").rstrip(".") == args.imbalance]
    rounds = load_rounds(root)
    parts = [f"# Federated AL benchmark: {args.dataset}, imbalance {args.imbalance}, {args.clients} clients, "
             f"Dirichlet {args.alpha}", "",
             f"`python benchmarks/federated.py --runs {args.runs}` (mean ± std over runs; labelled pool images).", ""]
    for metric, title in (("test_acc", "Test accuracy"), ("minority_acc", "Minority-class accuracy"),
                          ("balanced_acc", "Balanced accuracy")):
        parts += [accuracy_table(records, metric, title), "", savings_table(records, metric, True), "",
                  savings_table(records, metric, False), ""]
    parts += ["### Cost (2 shared CPU cores, 1 thread per process)", "", cost_table(records, rounds), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    run_and_report(get_args_parser(), run_experiments, report, "federated")
