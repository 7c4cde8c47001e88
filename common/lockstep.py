"""--executor lockstep: a central grid's runs advanced together, their same-shaped models trained as one.

Every method of a grid has the same number of labels at a given iteration, so the LeNets of one iteration
(methods x runs x ensemble members) can train as one vmapped model (common/batched_train.py): a few kernel
launches a step instead of one set per model, which is what a GPU left idle by one small model needs.

Each run is the central AL run itself (common.experiment.active_learning_steps, a generator that yields
every training it needs); this executor opens every run, advances each to its next training, trains the
waiting trainings in groups, sends each its share of the group's seconds, and repeats until every run is
finished. Acquisition, evaluation and the files are each run's own, so the results are the local executor's
up to float rounding (batched kernels sum in another order) and a killed grid resumes like any other. A
training that cannot join a group (MC-dropout models, images read lazily from disk, a lone model) is trained
one by one. On 2 CPU cores the batched training is 0.74-0.96x as fast as one by one
(benchmarks/results/batched_training.md): lockstep is for GPUs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack

from common import loop
from common.batched_train import can_join, can_train_together, train_together
from common.datasets import DATASETS
from common.experiment import (
    CentralJob, DatasetArrays, RunContext, active_learning_steps, central_method_run, dataset_arrays, prepare_run,
    run_central_job,
)
from common.methods import is_reference


def run_lockstep(jobs: Sequence[CentralJob], data: DatasetArrays | None = None,
                 log: Callable[[str], None] = print) -> None:
    """Run (or resume) every job: the all-train references one by one, the AL runs in lockstep; runs another
    process is working on are skipped, as the local executor skips them."""
    for job in jobs:
        if is_reference(job.settings.method):
            run_central_job(job, data, log)
    contexts: dict[tuple, RunContext] = {}  # one pool and validation copy per run, shared by its methods
    with ExitStack() as opened:
        runs = []
        for job in jobs:
            if is_reference(job.settings.method):
                continue
            key = (job.dataset, job.data_root, job.protocol, job.run, job.out)
            if key not in contexts:
                contexts[key] = prepare_run(DATASETS.get(job.dataset), data or dataset_arrays(job.dataset, job.data_root),
                                            job.protocol, job.run, job.out, job.options.device, False, log)
            ctx = contexts[key]
            run = central_method_run(ctx, job.settings)
            records = opened.enter_context(run.opened())
            if records is not None:
                runs.append(active_learning_steps(ctx, job.settings, job.options, job.keep_checkpoints, run, records))
        advance_together(runs)


def advance_together(runs: Sequence[loop.Steps]) -> list[list[dict]]:
    """Drive every run to its end: each round trains every waiting training (in groups of same-shaped models)
    and advances each run to its next one; returns each run's records."""
    finished: dict[int, list[dict]] = {}
    waiting: dict[int, loop.Training] = {}
    for index, steps in enumerate(runs):
        _advance(index, steps, None, waiting, finished)
    while waiting:
        seconds: dict[int, float] = {}
        for group in training_groups(waiting):
            seconds.update(train_group({index: waiting[index] for index in group}))
        waiting_now, waiting = waiting, {}
        for index in waiting_now:
            _advance(index, runs[index], seconds[index], waiting, finished)
    return [finished[index] for index in range(len(runs))]


def _advance(index: int, steps: loop.Steps, sent: float | None, waiting: dict, finished: dict) -> None:
    """Send `sent` (None to start) to run `index`; its next training goes into `waiting`, or its records into
    `finished` when it ends."""
    try:
        waiting[index] = steps.send(sent)
    except StopIteration as end:
        finished[index] = end.value


def training_groups(waiting: dict[int, loop.Training]) -> list[list[int]]:
    """The waiting trainings grouped by what a batched model needs to share: schedule, input transform, label count,
    device and architecture; one that cannot join any batched training (can_join) is a group of its own."""
    groups: dict[tuple, list[int]] = {}
    for index, training in waiting.items():
        first = training.models[0]
        if not can_join(first, training.images):
            groups[("alone", index)] = [index]
            continue
        key = (training.schedule, training.to_input, len(training.labels), training.device, type(first),
               tuple(tuple(p.shape) for p in first.parameters()))
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def train_group(group: dict[int, loop.Training]) -> dict[int, float]:
    """Train a group's models, as one batched model when they can be, else one by one; each training's
    seconds (a batched group's time shared out by model count)."""
    trainings = list(group.values())
    models = [model for t in trainings for model in t.models]
    images = [t.images for t in trainings for _ in t.models]
    labels = [t.labels for t in trainings for _ in t.models]
    if len(models) < 2 or not can_train_together(models, images, labels):
        return {index: training.one_by_one() for index, training in group.items()}
    first = trainings[0]
    seconds = train_together(models, images, labels, first.schedule, first.to_input,
                             [seed for t in trainings for seed in t.seeds], first.device)
    return {index: seconds * len(training.models) / len(models) for index, training in group.items()}
