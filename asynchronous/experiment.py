"""run.py's asynchronous mode (`--async-workers` 1 or more): the flags, their
checks, and the jobs: one per (run, initial model, method) with DA, one per (run, initial model) with RA."""
from __future__ import annotations

import argparse
from dataclasses import replace

from asynchronous.clock import ASSIGNMENTS, LATENCY_MODES, SPLITS, TRAIN_TIME, Asynchrony
from common.cli import non_negative_float, non_negative_int, positive_int
from common.errors import UserError
from common.experiment import Protocol, RunSettings
from common.methods import ALL_TRAIN
from common.strategies import STRATEGIES

EXECUTORS = ("local", "ray")
RA_DEFAULT = ("entropy", "least-confidence", "margin")  # AAL's round-robin
# The flags only an asynchronous run uses (run.py refuses them, given explicitly, in another mode).
FLAGS = ("servers", "assignment", "split", "query_batch", "train_threshold", "trainings", "sync", "latency",
         "latency_mode", "train_time")


def latency_range(text: str) -> tuple[float, float]:
    """--latency LO:HI in seconds, 0 <= LO <= HI, finite."""
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        low = high = float("nan")
    if not 0.0 <= low <= high < float("inf"):
        raise argparse.ArgumentTypeError(f"expected LO:HI seconds with 0 <= LO <= HI, got {text!r}")
    return low, high


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "asynchronous label querying (--async-workers 1 or more; docs/asynchronous.md)")
    group.add_argument("--async-workers", type=non_negative_int, default=0,
                       help="workers querying labels asynchronously, each from its own shard of the pool; "
                            "1 or more switches the asynchronous mode on (Ray actors)")
    group.add_argument("--servers", type=positive_int, default=1, help="servers retraining in turn (round-robin)")
    group.add_argument("--assignment", choices=ASSIGNMENTS, default="DA",
                       help="DA: every worker uses each --methods strategy (one run per method); RA: worker w uses "
                            "strategy w mod the list: --methods when it names several, else "
                            f"{','.join(RA_DEFAULT)} (AAL's)")
    group.add_argument("--split", choices=SPLITS, default="RS",
                       help="shards: RS random equal split, DS k-means on the initial model's features")
    group.add_argument("--query-batch", type=positive_int, default=None,
                       help="images per label request (default: --budget, the dataset's)")
    group.add_argument("--train-threshold", type=positive_int, default=None,
                       help="new labels between trainings (default: query batch x workers, as AAL)")
    group.add_argument("--trainings", type=positive_int, default=None,
                       help="server trainings per run; the run acquires trainings x threshold labels "
                            "(default: --iterations, the dataset's)")
    group.add_argument("--sync", action="store_true",
                       help="AAL's synchronous baseline: every worker asks once, all wait for the slowest, "
                            "the server trains, then the next round")
    group.add_argument("--latency", type=latency_range, default="0:60",
                       help="annotator delay per request, LO:HI seconds, uniform, seeded per worker")
    group.add_argument("--latency-mode", choices=LATENCY_MODES, default="simulated",
                       help="simulated: a seeded clock (reproducible, fast); real: workers sleep the delay and "
                            "events are taken as they happen (not reproducible)")
    group.add_argument("--train-time", type=non_negative_float, default=TRAIN_TIME,
                       help="simulated seconds a training takes per labelled image (0: instantaneous)")


def enabled(args: argparse.Namespace) -> bool:
    return args.async_workers >= 1


def default_methods(args: argparse.Namespace, central: list[str]) -> list[str]:
    """--methods when none were given: AAL's round-robin list for an RA run, else run.py's default."""
    return list(RA_DEFAULT) if enabled(args) and args.assignment == "RA" else central


def check(args: argparse.Namespace) -> None:
    """Flag combinations that make no sense, before anything is loaded."""
    if args.executor == "ray" and (args.clients > 1 or enabled(args)):
        raise UserError("--executor ray fans out central runs; federated and asynchronous runs schedule themselves")
    if not enabled(args):
        return
    if args.clients > 1:
        raise UserError("--async-workers and --clients exclude each other")
    if args.initial:
        raise UserError("--initial makes central initial models; asynchronous runs create theirs when they start")
    if ALL_TRAIN in args.methods:
        raise UserError(f"{ALL_TRAIN} is a central reference; run it without --async-workers")
    for name in args.methods:
        if STRATEGIES.get(name).held_out_folds:  # unknown: one line listing the valid ones
            raise UserError(f"{name} trains on validation folds, a central-only protocol; run it without --async-workers")
    if args.ensemble != 1:
        raise UserError("asynchronous servers train one model (--ensemble 1)")


def asynchrony(args: argparse.Namespace, budget: int, iterations: int) -> Asynchrony:
    """The timing the flags ask for, defaults resolved (`budget`, `iterations`: the experiment's)."""
    batch = args.query_batch or budget
    return Asynchrony(
        workers=args.async_workers, servers=args.servers, assignment=args.assignment, split=args.split,
        query_batch=batch, threshold=args.train_threshold or batch * args.async_workers,
        trainings=args.trainings or iterations, sync=args.sync, latency=args.latency,
        latency_mode=args.latency_mode, train_time=args.train_time,
    )


def assignments(args: argparse.Namespace) -> list[tuple[str, tuple[str, ...]]]:
    """(method name, strategy of each worker) per run: DA one run per method; RA one run, round-robin over
    the list, named by the list joined with "+"."""
    workers = args.async_workers
    if args.assignment == "DA":
        return [(method, (method,) * workers) for method in args.methods]
    strategies = tuple(args.methods) if len(args.methods) > 1 else RA_DEFAULT
    return [("+".join(strategies), tuple(strategies[w % len(strategies)] for w in range(workers)))]


def asynchronous_protocol(protocol: Protocol, timing: Asynchrony) -> Protocol:
    return replace(protocol, asynchronous=timing.name())


def check_pool(pool_size: int, timing: Asynchrony, initial_labels: int = 0) -> None:
    if initial_labels + timing.budget > pool_size:
        start = f"{initial_labels} initial labels + " if initial_labels else ""
        raise UserError(f"{start}{timing.trainings} trainings x threshold {timing.threshold} = "
                        f"{initial_labels + timing.budget} labels would exhaust the pool ({pool_size} images); "
                        f"lower --trainings or --train-threshold")
    if timing.workers > pool_size - initial_labels:
        raise UserError(f"--async-workers {timing.workers} is more than the pool's {pool_size - initial_labels} "
                        f"unlabelled images")


def run_settings(args: argparse.Namespace, method: str, unsupervised: int, timing: Asynchrony, schedule,
                 descriptor_layers: tuple[str, ...], top_k: int) -> RunSettings:
    return RunSettings(
        method=method, unsupervised=unsupervised, iterations=timing.trainings, budget=timing.query_batch,
        schedule=schedule, ensemble=1, mc_samples=args.mc_samples, descriptor_layers=descriptor_layers, top_k=top_k,
        train_on_validation=args.train_on_validation, vaal_steps=args.vaal_steps,
    )


def run_jobs(jobs: list, options, address: str | None) -> None:
    """Run every (RunContext, AsyncJob) one after the other on Ray actors; Ctrl-C stops Ray (the files
    written so far stay readable, the same command resumes)."""
    from asynchronous import executor  # noqa: PLC0415  (Ray and the actors load only for asynchronous runs)
    from asynchronous.driver import RayActors, run_asynchronous  # noqa: PLC0415

    started = executor.connect(address)
    try:
        for ctx, job in jobs:
            run_asynchronous(ctx, job, options, lambda actors: RayActors(actors, options.device.type == "cuda"))
    except KeyboardInterrupt:
        executor.shutdown()
        raise
    finally:
        if started:
            executor.shutdown()
