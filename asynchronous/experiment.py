"""run.py's asynchronous mode (`--async-workers` 1 or more): the flags, their
checks, and the jobs: one per (run, initial model, method) with DA, one per (run, initial model) with RA."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

from asynchronous.clock import ASSIGNMENTS, LATENCY_MODES, SPLITS, TRAIN_TIME, Asynchrony
from common.cli import non_negative_float, non_negative_int, positive_int
from common.errors import UserError
from common.experiment import Protocol, RunSettings
from common.methods import ALL_TRAIN, is_reference
from common.strategies import STRATEGIES

EXECUTORS = ("local", "ray", "lockstep")
RA_DEFAULT = ("entropy", "least-confidence", "margin")  # AAL's round-robin


@dataclass(frozen=True)
class AsynchronousFlags:
    """The asynchronous flags of a run.py command (their defaults are the parser's)."""

    async_workers: int = 0
    servers: int = 1
    assignment: str = "DA"
    split: str = "RS"
    query_batch: int | None = None
    train_threshold: int | None = None
    trainings: int | None = None
    sync: bool = False
    latency: tuple[float, float] = (0.0, 60.0)
    latency_mode: str = "simulated"
    train_time: float = TRAIN_TIME

    @property
    def enabled(self) -> bool:
        return self.async_workers >= 1

    def default_methods(self, central: list[str]) -> list[str]:
        """--methods when none were given: AAL's round-robin list for an RA run, else run.py's default."""
        return list(RA_DEFAULT) if self.enabled and self.assignment == "RA" else central

    def asynchrony(self, budget: int, iterations: int) -> Asynchrony:
        """The timing the flags ask for, defaults resolved (`budget`, `iterations`: the experiment's)."""
        batch = self.query_batch or budget
        return Asynchrony(
            workers=self.async_workers, servers=self.servers, assignment=self.assignment, split=self.split,
            query_batch=batch, threshold=self.train_threshold or batch * self.async_workers,
            trainings=self.trainings or iterations, sync=self.sync, latency=self.latency,
            latency_mode=self.latency_mode, train_time=self.train_time,
        )

    def assignments(self, methods: list[str]) -> list[tuple[str, tuple[str, ...]]]:
        """(method name, strategy of each worker) per run: DA one run per method; RA one run, round-robin over
        the list, named by the list joined with "+"."""
        workers = self.async_workers
        if self.assignment == "DA":
            return [(method, (method,) * workers) for method in methods]
        strategies = tuple(methods) if len(methods) > 1 else RA_DEFAULT
        return [("+".join(strategies), tuple(strategies[w % len(strategies)] for w in range(workers)))]


# The flags only an asynchronous run uses (run.py refuses them, given explicitly, in another mode).
FLAGS = tuple(f.name for f in fields(AsynchronousFlags) if f.name != "async_workers")


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
    default = AsynchronousFlags()
    group = parser.add_argument_group(
        "asynchronous label querying (--async-workers 1 or more; docs/asynchronous.md)")
    group.add_argument("--async-workers", type=non_negative_int, default=default.async_workers,
                       help="workers querying labels asynchronously, each from its own shard of the pool; "
                            "1 or more switches the asynchronous mode on (Ray actors)")
    group.add_argument("--servers", type=positive_int, default=default.servers,
                       help="servers retraining in turn (round-robin)")
    group.add_argument("--assignment", choices=ASSIGNMENTS, default=default.assignment,
                       help="DA: every worker uses each --methods strategy (one run per method); RA: worker w uses "
                            "strategy w mod the list: --methods when it names several, else "
                            f"{','.join(RA_DEFAULT)} (AAL's)")
    group.add_argument("--split", choices=SPLITS, default=default.split,
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
    group.add_argument("--latency", type=latency_range, default=":".join(f"{s:g}" for s in default.latency),
                       help="annotator delay per request, LO:HI seconds, uniform, seeded per worker")
    group.add_argument("--latency-mode", choices=LATENCY_MODES, default=default.latency_mode,
                       help="simulated: a seeded clock (reproducible, fast); real: workers sleep the delay and "
                            "events are taken as they happen (not reproducible)")
    group.add_argument("--train-time", type=non_negative_float, default=default.train_time,
                       help="simulated seconds a training takes per labelled image (0: instantaneous)")


def check(flags: AsynchronousFlags, methods: list[str], *, executor: str, federated: bool, initial: bool,
          ensemble: int) -> None:
    """Flag combinations that make no sense, before anything is loaded."""
    if executor != "local" and (federated or flags.enabled):
        raise UserError(f"--executor {executor} runs a grid of central runs; federated and asynchronous runs "
                        f"schedule themselves")
    if not flags.enabled:
        return
    if federated:
        raise UserError("--async-workers and --clients exclude each other")
    if initial:
        raise UserError("--initial makes central initial models; asynchronous runs create theirs when they start")
    if any(is_reference(name) for name in methods):
        raise UserError(f"{ALL_TRAIN} is a central reference; run it without --async-workers")
    for name in methods:
        if STRATEGIES.get(name).held_out_folds:  # unknown: one line listing the valid ones
            raise UserError(f"{name} trains on validation folds, a central-only protocol; run it without --async-workers")
    if ensemble != 1:
        raise UserError("asynchronous servers train one model (--ensemble 1)")


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


def run_settings(central: RunSettings, method: str, timing: Asynchrony) -> RunSettings:
    """An asynchronous run's settings: the central ones of `method` with one model, the query batch as the
    budget and one step per training."""
    return replace(central, method=method, iterations=timing.trainings, budget=timing.query_batch, ensemble=1)


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
