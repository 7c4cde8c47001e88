"""KAFAL's and LoGo's claims under their own protocol, scaled to 2 CPU cores: KSAS beats random, KCFU adds to
KSAS, LoGo beats random (and where federated FK stands).

Protocol (KAFAL, ICCV 2023, and LoGo, CVPR 2023, on CIFAR-10; here Fashion-MNIST with LeNet):
- a balanced pool (`--imbalance 1`), 10 clients, Dirichlet 0.1 label skew;
- a 10 % starting set (5000 of the 50 000 pool images; KAFAL 10 %, LoGo 5 %), then +5 % (2500) per cycle;
- the global model re-initialised every cycle (`--reinit-each-cycle`), 80 % of the clients per round
  (`--participation 0.8`, the cycle's last round takes all, as KAFAL's code), FedAvg;
- random, entropy, ksas, ksas + kcfu, logo, federated fk-nn.
Scaled (said in the report): 3 cycles instead of 6 (KAFAL) or 15 (LoGo), 10 rounds x 3 local epochs instead of
50 x 40 (KAFAL) or 100 x 5 (LoGo), LeNet and the dataset's SGD schedule instead of ResNet-8 / CNN4Conv. With two
workers on 2 shared cores a cycle of 10 rounds takes 30-90 s, so three seeded runs fit in about 40 minutes.

Runs go through run.py (they resume after a kill; `--workers 2` runs two runs side by side); the tables are
printed as Markdown and written to benchmarks/results/kafal_logo.md.

    python benchmarks/kafal_logo.py [--runs 3] [--workers 2] [--out local_data/bench-kafal-logo] [--report-only]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.reports import add_run_arguments, run_and_report, run_commands  # noqa: E402
from common.reporting import aggregate, load_records, method_label  # noqa: E402

METHODS = "random,entropy,ksas,logo,fk-nn"
KCFU_METHODS = "ksas"
CLAIMS = (("ksas", "random", "KSAS beats random (KAFAL)"), ("ksas+kcfu", "ksas", "KCFU adds to KSAS (KAFAL)"),
          ("logo", "random", "LoGo beats random (LoGo)"))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--clients", default="10")
    parser.add_argument("--alpha", default="0.1")
    parser.add_argument("--initial-labels", default="5000", help="the starting set (10 %% of the pool)")
    parser.add_argument("--budget", default="2500", help="labels per cycle (5 %% of the pool)")
    parser.add_argument("--iterations", default="3", help="cycles")
    parser.add_argument("--rounds", default="10")
    parser.add_argument("--local-epochs", default="3")
    parser.add_argument("--participation", default="0.8")
    return add_run_arguments(parser, REPO / "local_data" / "bench-kafal-logo")


def commands(args: argparse.Namespace) -> list[list[str]]:
    """One run.py command per (run, local loss): every method of a run in one simulation."""
    protocol = ["--dataset", args.dataset, "--imbalance", "1", "--clients", args.clients, "--partition", "dirichlet",
                "--alpha", args.alpha, "--initial-labels", args.initial_labels, "--budget", args.budget,
                "--iterations", args.iterations, "--rounds", args.rounds, "--local-epochs", args.local_epochs,
                "--participation", args.participation, "--reinit-each-cycle", "--fed-algo", "fedavg",
                "--out", str(args.out), "--threads", "1", "--quiet"]
    found = []
    for run in range(args.runs):
        window = ["--run-start", str(run), "--run-stop", str(run + 1)]
        found.append([sys.executable, str(REPO / "run.py"), *protocol, *window, "--methods", METHODS])
        found.append([sys.executable, str(REPO / "run.py"), *protocol, *window, "--methods", KCFU_METHODS,
                      "--local-loss", "kcfu"])
    return found


def run_experiments(args: argparse.Namespace) -> None:
    run_commands(commands(args), args.workers, "kafal_logo", REPO)


def accuracy_table(curves: dict, title: str) -> str:
    xs = sorted({int(x) for curve in curves.values() for x in curve.x})
    lines = [f"### {title}", "", "| method | " + " | ".join(map(str, xs)) + " | runs |", "|---|" + "---|" * (len(xs) + 1)]
    for name, curve in sorted(curves.items()):
        cells = {int(x): f"{m:.3f} ± {s:.3f}" for x, m, s in zip(curve.x, curve.mean, curve.std)}
        lines.append(f"| {name} | " + " | ".join(cells.get(x, "—") for x in xs) + f" | {curve.run_label()} |")
    return "\n".join(lines)


def paired_differences(records: list[dict], better: str, worse: str, metric: str) -> dict[int, list[float]]:
    """labels -> the per-run differences better - worse (same seed: same split, clients and starting set)."""
    value = {(method_label(r), r["run"], r["labelled"]): r[metric] for r in records}
    found: dict[int, list[float]] = {}
    for (label, run, labelled), a in sorted(value.items()):
        if label == better and (worse, run, labelled) in value:
            found.setdefault(labelled, []).append(a - value[worse, run, labelled])
    return found


def claim_lines(records: list[dict]) -> list[str]:
    """Each claim at every budget: the mean of the paired per-run differences, its standard error, and a
    two-sided paired t-test at 5 % ('yes' / 'no': the difference is significant either way)."""
    lines = ["| claim | labels | difference (mean ± s.e., paired by run) | runs | holds? |", "|---|---|---|---|---|"]
    for better, worse, text in CLAIMS:
        for labelled, differences in paired_differences(records, better, worse, "test_acc").items():
            mean = float(np.mean(differences))
            error = float(np.std(differences, ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else float("nan")
            critical = float(stats.t.ppf(0.975, len(differences) - 1)) if len(differences) > 1 else float("nan")
            verdict = ("yes" if mean > critical * error else "no" if -mean > critical * error else "within noise") \
                if error == error else "one run"
            lines.append(f"| {text} | {labelled} | {mean:+.3f} ± {error:.3f} | {len(differences)} | {verdict} |")
    return lines


def report(args: argparse.Namespace) -> str:
    records = [r for r in load_records(args.out / args.dataset) if r.get("federation")]
    parts = [f"# KAFAL and LoGo under their own protocol: {args.dataset}, balanced pool, {args.clients} clients, "
             f"Dirichlet {args.alpha}", "",
             f"Starting set {args.initial_labels}, +{args.budget} per cycle, {args.iterations} cycles, {args.rounds} "
             f"rounds x {args.local_epochs} local epochs, participation {args.participation}, model re-initialised "
             f"each cycle (`python benchmarks/kafal_logo.py --runs {args.runs}`; labels count the starting set).", ""]
    for metric, title in (("test_acc", "Test accuracy"), ("minority_acc", "Minority-class accuracy")):
        curves = {}
        for name in sorted({method_label(r) for r in records}):
            (curves[name],) = aggregate([r for r in records if method_label(r) == name], metric).values()
        parts += [accuracy_table(curves, title), ""]
        if metric == "test_acc":
            parts += ["### The papers' claims (paired by run; 'yes' / 'no': significant by a two-sided paired t-test at 5 %)", "",
                      *claim_lines(records), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    run_and_report(get_args_parser(), run_experiments, report, "kafal_logo")
