"""What a run.py command line means: its parser, the `Command` it parses into, and the plan of runs it asks for.

run.py (the entry point) and the federated deployment (federated/app.py, federated/local_deployment.py)
parse and plan through this module, so a command means one thing wherever it runs:

    command = parse(["--dataset", "digits", "--clients", "3"])  # or command_from(vars(namespace))
    exp = experiment(command)                                  # every check, the dataset loaded
    jobs = federated_jobs(command, exp)                         # or central_jobs / asynchronous_jobs
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Container
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import datasets_available  # noqa: F401  (registers every dataset)
from asynchronous import experiment as asynchronous_experiment
from asynchronous.driver import AsyncJob
from asynchronous.experiment import AsynchronousFlags
from common.cli import (
    DefaultsHelpFormatter,
    OneLineErrorParser,
    comma_list,
    float_list,
    int_list,
    non_negative_int,
    positive_float,
    positive_int,
)
from common.datasets import DATASETS, DatasetSpec
from common.errors import UserError
from common.experiment import (
    CentralJob,
    DatasetArrays,
    Protocol,
    RunContext,
    RunSettings,
    draw_split,
    ensure_initial_models,
    prepare_run,
    run_central_job,
)
from common.gen_descr import STORES
from common.methods import ALL_TRAIN, is_reference
from common.naming import INITIAL_KINDS, LOCAL_DATA, imbalance_name, minority_set_name
from common.schedule import Schedule
from common.search import INDEX_KINDS, SearchSettings
from common.seeding import numpy_rng
from common.splits import MINORITY_RULES
from common.strategies import STRATEGIES, AcquisitionOptions, Strategy
from common.train import resolve_device, set_cpu_threads
from federated import experiment as federated_experiment
from federated.experiment import FederatedFlags

DEFAULT_METHODS = "random,entropy,fk-nn"
DESCRIPTION = """Active-learning experiments on biased pools: initial models (--initial) and AL runs.

With no arguments: a small complete experiment on scikit-learn's embedded digits (offline).
Re-running a command resumes it: finished iterations are kept, a half-done one is redone.
"""


def checkpoint_choice(text: str) -> range | list[int]:
    """--keep-checkpoints: 'last' keeps only the latest, 'all' every iteration, or a list."""
    if text == "last":
        return []
    if text == "all":
        return range(1 << 30)
    return int_list(text)


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=DESCRIPTION, formatter_class=DefaultsHelpFormatter, prog="run.py")
    data = parser.add_argument_group("data protocol (docs/method.md#data-protocol)")
    data.add_argument("--dataset", default="digits", help=f"one of: {', '.join(DATASETS.names())}")
    data.add_argument("--data-root", type=Path, default=None,
                      help="folder with the dataset files (default: the dataset's usual places, then local_data/data)")
    data.add_argument("--imbalance", type=float_list, default=None,
                      help="imbalance ratio(s) ir, comma-separated (default: the dataset's; 1 = balanced)")
    data.add_argument("--minority-classes", type=int_list, default=None,
                      help="classes subsampled by the imbalance (default: the dataset's rule: the upper half, "
                           "or for imagenet a seeded half per run)")
    data.add_argument("--val-per-class", type=non_negative_int, default=None,
                      help="validation images per class (default: the dataset's); 0: the cold start, no validation "
                           "set given (central runs; FK reads held-out folds of its own labels: fk-nn-kfold, "
                           "fk-nn-split)")

    runs = parser.add_argument_group("runs")
    runs.add_argument("--out", type=Path, default=LOCAL_DATA, help="results folder (default: local_data/)")
    runs.add_argument("--runs", type=positive_int, default=3, help="number of seeded runs (run r uses seed+r)")
    runs.add_argument("--run-start", type=non_negative_int, default=None, help="first run index (overrides --runs)")
    runs.add_argument("--run-stop", type=positive_int, default=None, help="one past the last run index")
    runs.add_argument("--seed", type=non_negative_int, default=0, help="base seed")
    runs.add_argument("--initial", action="store_true",
                      help="only create each run's random and rotation-pretrained initial models (and the SimCLR "
                           "one with --unsupervised 2)")

    al = parser.add_argument_group("active learning (docs/method.md#method)")
    al.add_argument("--methods", type=comma_list, default=None,
                    help=f"comma-separated, from: {', '.join(STRATEGIES.names())}; "
                         f"{ALL_TRAIN} trains once on the whole labelled pool (the reference line) "
                         f"(default: {DEFAULT_METHODS}; asynchronous RA: {','.join(asynchronous_experiment.RA_DEFAULT)})")
    al.add_argument("--unsupervised", type=int_list, default="0",
                    help="0: start from a random model, 1: from the rotation-pretrained one, 2: from a SimCLR-style "
                         "contrastively pretrained one (comma-separated for several, e.g. 0,1)")
    al.add_argument("--iterations", type=positive_int, default=None, help="acquisitions per run (default: dataset's)")
    al.add_argument("--initial-labels", type=non_negative_int, default=0,
                    help="pool images labelled at random before the first acquisition (a starting set, as KAFAL, "
                         "LoGo and AAL use); the model is trained on them first, they count in every total "
                         "(federated: drawn per client in proportion to its pool)")
    al.add_argument("--budget", type=positive_int, default=None, help="images acquired per iteration (default: dataset's)")
    al.add_argument("--epochs", type=positive_int, default=None,
                    help="training epochs per iteration; milestones scale with it (default: dataset's schedule)")
    al.add_argument("--mc-samples", type=positive_int, default=20, help="dropout passes K for the *-mc methods")
    al.add_argument("--ensemble", type=positive_int, default=1, help="independently initialised models E")
    al.add_argument("--descriptor-layers", default=None,
                    help="FK descriptor layers: a named set of the dataset (LeNet: l80, l20; ResNets: l256, l768) or comma-separated module names")
    al.add_argument("--top-k", type=positive_int, default=None, help="matches per centre K (default: dataset's)")
    al.add_argument("--descriptor-store", choices=STORES, default="auto",
                    help="FK descriptors in memory, in disk-backed memmaps under the run folder (bounded RAM "
                         "for million-image pools), or auto: disk above 2 GiB per matrix")
    al.add_argument("--index", choices=INDEX_KINDS, default="auto",
                    help="FK matching: exact inner product (FAISS; on a CUDA device without faiss-gpu, exact "
                         "chunked PyTorch on the GPU), IVF (approximate), torch (exact chunked PyTorch on --device), "
                         "or auto: IVF on CPU for pools of --ivf-threshold images searched by at least 4 x nlist "
                         "centres, else exact (recall@K of IVF against exact is recorded as match_recall)")
    al.add_argument("--nlist", type=positive_int, default=None, help="IVF lists (default: about 4 sqrt(pool))")
    al.add_argument("--nprobe", type=positive_int, default=16, help="IVF lists searched per centre")
    al.add_argument("--ivf-threshold", type=non_negative_int, default=200_000,
                    help="smallest pool for which auto may pick IVF")
    al.add_argument("--vaal-steps", type=positive_int, default=300, help="VAE/discriminator steps per VAAL acquisition")
    al.add_argument("--train-on-validation", action="store_true",
                    help="every method also trains on the labelled validation set (like-for-like with FK)")
    al.add_argument("--val-folds", type=positive_int, default=5,
                    help="fk-nn-split / fk-nn-kfold: class-stratified validation folds, one held out of training "
                         "for the miss set")
    al.add_argument("--keep-checkpoints", type=checkpoint_choice, default="last",
                    help="weights kept per iteration for visualize.py: last, all, or iterations like 0,3,7 "
                         "(the latest is always kept)")

    system = parser.add_argument_group("system")
    system.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the GPU when PyTorch sees one, else the CPU")
    system.add_argument("--batch-size", type=positive_int, default=None,
                        help="inference and descriptor batch size (default: the dataset's; LeNet 2048)")
    system.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for PyTorch and FAISS (default: all cores; 1 is best when several runs share a machine)")
    system.add_argument("--quiet", action="store_true", help="no progress bars or per-iteration lines")
    system.add_argument("--executor", choices=asynchronous_experiment.EXECUTORS, default="local",
                        help="central runs: one after the other here (local), one Ray task per method run (ray), "
                             "or every run advanced together with same-shaped models trained as one batched model "
                             "(lockstep: for a GPU; slower on a CPU)")
    system.add_argument("--gpus-per-task", type=positive_float, default=None,
                        help="--executor ray: the GPU share each method run asks Ray for (e.g. 0.25: four small "
                             "models side by side on one GPU; Ray schedules them and sets CUDA_VISIBLE_DEVICES); "
                             "default: none")
    system.add_argument("--ray-address", default=None,
                        help="Ray cluster for asynchronous runs and --executor ray ('auto': the one `ray start "
                             "--head` started here, or HOST:PORT; default: a private Ray on this machine)")
    federated_experiment.add_arguments(parser)
    asynchronous_experiment.add_arguments(parser)
    return parser


@dataclass(frozen=True)
class Command:
    """A parsed run.py command line: every flag (the parser's destinations; the federated and asynchronous
    ones grouped), and `given`, the flags the line named explicitly."""

    dataset: str
    data_root: Path | None
    imbalance: list[float] | None
    minority_classes: list[int] | None
    val_per_class: int | None
    out: Path
    runs: int
    run_start: int | None
    run_stop: int | None
    seed: int
    initial: bool
    methods: list[str] | None
    unsupervised: list[int]
    iterations: int | None
    initial_labels: int
    budget: int | None
    epochs: int | None
    mc_samples: int
    ensemble: int
    descriptor_layers: str | None
    top_k: int | None
    descriptor_store: str
    index: str
    nlist: int | None
    nprobe: int
    ivf_threshold: int
    vaal_steps: int
    train_on_validation: bool
    val_folds: int
    keep_checkpoints: Container[int]
    device: str
    batch_size: int | None
    threads: int | None
    quiet: bool
    executor: str
    ray_address: str | None
    gpus_per_task: float | None = None
    federated: FederatedFlags = field(default_factory=FederatedFlags)
    asynchronous: AsynchronousFlags = field(default_factory=AsynchronousFlags)
    given: frozenset[str] = frozenset()

    @property
    def mode(self) -> str:
        """central, federated or asynchronous: what the command runs."""
        if self.federated.enabled:
            return "federated"
        return "asynchronous" if self.asynchronous.enabled else "central"


GROUPED = {"federated": FederatedFlags, "asynchronous": AsynchronousFlags}


def command_from(flags: dict) -> Command:
    """The Command of a parser's flags (`vars` of its namespace)."""
    plain = {f.name: flags[f.name] for f in fields(Command) if f.name not in GROUPED and f.name != "given"}
    grouped = {name: kind(**{f.name: flags[f.name] for f in fields(kind)}) for name, kind in GROUPED.items()}
    return Command(**plain, **grouped, given=frozenset(flags.get("given", ())))


def parse(argv: list[str]) -> Command:
    """run.py's command line `argv` as a Command (a mistake: argparse's one-line error, exit 2)."""
    return command_from(vars(get_args_parser().parse_args(argv)))


def descriptor_layers(spec: DatasetSpec, choice: str | None) -> tuple[str, ...]:
    """A named layer set of the dataset, or module names checked against its model."""
    if choice is None:
        return spec.descriptor_layers[spec.default_layer_set]
    if choice in spec.descriptor_layers:
        return spec.descriptor_layers[choice]
    layers = tuple(part.strip() for part in choice.split(",") if part.strip())
    modules = {name for name, _ in spec.model(spec.num_classes, False).named_modules() if name}
    unknown = [name for name in layers if name not in modules]
    if not layers or unknown:
        raise UserError(
            f"--descriptor-layers {choice!r}: not a layer set ({', '.join(spec.descriptor_layers)}) "
            f"nor module names of the model ({', '.join(sorted(modules))})"
        )
    return layers


def check_held_out_folds(name: str, strategy: Strategy, command: Command) -> None:
    """The held-out-fold FK methods train on their own share of the validation set."""
    if strategy.held_out_folds is None:
        return
    if command.train_on_validation:
        raise UserError(f"{name} already trains on all validation folds but one; run it without --train-on-validation "
                        f"(or use fk-nn --train-on-validation for the plain variant)")
    if command.val_folds < 2:
        raise UserError(f"--val-folds must be at least 2 for {name}, got {command.val_folds}")


def check_cold_start(command: Command, methods: list[str]) -> None:
    """--val-per-class 0 (no validation set given): a central run, nothing to train on beside the pool, and the
    methods that read validation labels read held-out folds of their own labels (docs/method.md#cold-start)."""
    if command.val_per_class != 0:
        return
    if command.federated.enabled or command.asynchronous.enabled:
        raise UserError("--val-per-class 0 (the cold start) is a flag value of central runs; federated and "
                        "asynchronous runs read a labelled validation set")
    if command.train_on_validation:
        raise UserError("--train-on-validation with --val-per-class 0: there is no validation set to train on")
    for name in methods:
        if is_reference(name):
            continue
        strategy = STRATEGIES.get(name)
        if strategy.uses_validation_labels and strategy.held_out_folds is None:
            raise UserError(f"{name} reads a labelled validation set, and --val-per-class 0 gives none; use "
                            f"fk-nn-kfold or fk-nn-split (held-out folds of their own labels)")


def check_val_folds(validation_size: int, folds: int, methods: list[str]) -> None:
    held_out = [m for m in methods if not is_reference(m) and STRATEGIES.get(m).held_out_folds]
    if held_out and validation_size and folds > validation_size:  # 0: folds of their own labels (cold start)
        raise UserError(f"--val-folds {folds} is more than the {validation_size} validation images ({held_out[0]})")


# Flags a federated run has no use for (its clients train one global model with cross-entropy or KCFU, and
# match FK candidates with exact FAISS on their own pools).
NOT_FEDERATED = ("ensemble", "train_on_validation", "mc_samples", "vaal_steps", "val_folds", "keep_checkpoints",
                 "descriptor_store", "index", "nlist", "nprobe", "ivf_threshold")
MODE_SWITCH = {"central": "no --clients or --async-workers", "federated": "--clients 2 or more",
               "asynchronous": "--async-workers 1 or more"}


def check_mode_flags(command: Command) -> None:
    """A flag given explicitly that the command's mode would ignore is a one-line error naming its mode."""
    current, given = command.mode, command.given
    owners = {**dict.fromkeys(federated_experiment.FLAGS, "federated"),
              **dict.fromkeys(asynchronous_experiment.FLAGS, "asynchronous")}
    if current == "federated" and command.asynchronous.enabled:
        return  # asynchronous_experiment.check says that the two modes exclude each other
    for dest in sorted(given):
        flag = "--" + dest.replace("_", "-")
        if owners.get(dest, current) != current:
            article = "an" if current == "asynchronous" else "a"
            raise UserError(f"{flag} is a flag of {owners[dest]} runs ({MODE_SWITCH[owners[dest]]}); this command is "
                            f"{article} {current} run ({MODE_SWITCH[current]})")
        if current == "federated" and dest in NOT_FEDERATED:
            raise UserError(f"{flag} is a flag of central and asynchronous runs; federated runs do not use it "
                            f"(they train one global model); run without it")
    if command.gpus_per_task is not None and (command.executor != "ray" or current != "central"):
        raise UserError("--gpus-per-task is a flag of central runs with --executor ray (Ray schedules the runs "
                        "onto GPU shares); add --executor ray, or leave it out")
    if command.gpus_per_task is not None and command.device == "cpu":
        raise UserError("--gpus-per-task asks Ray for GPU shares, but --device cpu trains on the CPU; use "
                        "--device cuda (or auto)")
    if "ray_address" in given and current != "asynchronous" and command.executor != "ray":
        raise UserError("--ray-address is a flag of asynchronous runs (--async-workers 1 or more) and of "
                        "--executor ray; this command uses no Ray")


def run_indices(command: Command) -> range:
    start = command.run_start if command.run_start is not None else 0
    stop = command.run_stop if command.run_stop is not None else start + command.runs
    if start < 0 or stop <= start:
        raise UserError(f"--run-start/--run-stop give no runs ({start}..{stop})")
    return range(start, stop)


def check_budget(pool_size: int, budget: int, iterations: int, initial_labels: int = 0) -> None:
    if budget > pool_size:
        raise UserError(f"--budget {budget} is larger than the pool ({pool_size} images)")
    if initial_labels + budget * iterations > pool_size:
        start = f"{initial_labels} initial labels + " if initial_labels else ""
        raise UserError(
            f"{start}{iterations} iterations x budget {budget} = {initial_labels + budget * iterations} labels would "
            f"exhaust the pool ({pool_size} images); lower --iterations or --budget"
        )


def protocols(command: Command, spec: DatasetSpec) -> list[tuple[int, Protocol]]:
    """(run index, protocol) of every imbalance ratio and run the command asks for."""
    found = []
    for imbalance in command.imbalance or [spec.default_imbalance]:
        for run in run_indices(command):
            rule = MINORITY_RULES[spec.minority_rule]
            minority = (tuple(sorted(command.minority_classes)) if command.minority_classes
                        else rule(spec.num_classes, numpy_rng(command.seed + run, "minority")))
            found.append((run, Protocol(
                dataset=spec.name, imbalance=imbalance, val_per_class=spec.val_per_class if command.val_per_class is None else command.val_per_class,
                minority_classes=minority, seed=command.seed + run, imbalance_rule=spec.imbalance_rule,
                minority_set=minority_set_name(minority) if command.minority_classes else "",
                initial_labels=command.initial_labels,
            )))
    return found


@dataclass(frozen=True)
class Experiment:
    """What a command resolves to before any run starts (every mode)."""

    spec: DatasetSpec
    data: DatasetArrays
    options: AcquisitionOptions
    methods: list[str]  # --methods, or the mode's default
    budget: int
    iterations: int
    schedule: Schedule
    log: Callable[[str], None]


def experiment(command: Command) -> Experiment:
    """Check the flags and load the dataset; every mistake is a UserError before anything is written."""
    spec = DATASETS.get(command.dataset)
    if command.out.exists() and not command.out.is_dir():
        raise UserError(f"--out {command.out} is not a folder")
    check_mode_flags(command)
    if command.ray_address:
        from asynchronous.executor import check_address  # noqa: PLC0415  (Ray itself loads only when a run starts)

        check_address(command.ray_address)
    methods = command.methods or command.asynchronous.default_methods(comma_list(DEFAULT_METHODS))
    asynchronous_experiment.check(command.asynchronous, methods, executor=command.executor,
                                  federated=command.federated.enabled, initial=command.initial,
                                  ensemble=command.ensemble)
    if command.federated.enabled:
        federated_experiment.check_methods(methods)
        if command.initial:
            raise UserError("--initial makes central initial models; federated runs create theirs when they start")
    else:
        for name in methods:
            if not is_reference(name):
                # an unknown name: one line listing the valid ones
                check_held_out_folds(name, STRATEGIES.get(name), command)
    check_cold_start(command, methods)
    if any(u not in range(len(INITIAL_KINDS)) for u in command.unsupervised):
        raise UserError(f"--unsupervised takes 0, 1 and/or 2, got {command.unsupervised}")
    device = resolve_device(command.device)
    if command.threads:
        set_cpu_threads(command.threads)
    options = AcquisitionOptions(
        device=device, mc_samples=command.mc_samples,
        descriptor_layers=descriptor_layers(spec, command.descriptor_layers), feature_layer=spec.penultimate,
        vaal_steps=command.vaal_steps, top_k=command.top_k or spec.top_k,
        batch_size=command.batch_size or spec.inference_batch_size,
        progress=not command.quiet and sys.stderr.isatty(), descriptor_store=command.descriptor_store,
        search=SearchSettings(index=command.index, nlist=command.nlist, nprobe=command.nprobe,
                              ivf_threshold=command.ivf_threshold, device=str(device)),
    )
    return Experiment(
        spec=spec,
        data=DatasetArrays(train=spec.load(command.data_root, True), test=spec.load(command.data_root, False)),
        options=options, methods=methods, budget=command.budget or spec.budget,
        iterations=command.iterations or spec.iterations,
        schedule=spec.schedule.with_epochs(command.epochs) if command.epochs else spec.schedule,
        log=(lambda _line: None) if command.quiet else (lambda line: print(line, flush=True)),
    )


def make_initial_models(command: Command, exp: Experiment) -> None:
    """--initial: each run's random and rotation-pretrained initial models (and those --unsupervised asks
    for), nothing else."""
    kinds = tuple(dict.fromkeys(["random", "rotation", *(INITIAL_KINDS[u] for u in command.unsupervised)]))
    for run, protocol in protocols(command, exp.spec):
        ctx = prepare_run(exp.spec, exp.data, protocol, run, command.out, exp.options.device, exp.options.progress,
                          exp.log)
        ensure_initial_models(ctx, command.ensemble, kinds)
        exp.log(f"[{exp.spec.name} ir{imbalance_name(protocol.imbalance)} run{run}] initial models in "
                f"{ctx.folder / 'initial'}")


def run_settings(command: Command, exp: Experiment, method: str, unsupervised: int) -> RunSettings:
    """One method's central settings (the asynchronous ones start from them)."""
    return RunSettings(
        method=method, unsupervised=unsupervised, iterations=exp.iterations, budget=exp.budget,
        schedule=exp.schedule, ensemble=command.ensemble, mc_samples=command.mc_samples,
        descriptor_layers=exp.options.descriptor_layers, top_k=exp.options.top_k,
        train_on_validation=command.train_on_validation, vaal_steps=command.vaal_steps, val_folds=command.val_folds,
    )


def central_jobs(command: Command, exp: Experiment) -> list[CentralJob]:
    """One job per (run, initial model, method), in that order; every run's split is drawn (or checked) and
    its budget checked here, before any run starts."""
    spec, options = exp.spec, exp.options
    runs = protocols(command, spec)
    for _run, protocol in runs:  # every check before the first file is written
        split = draw_split(spec, exp.data.train.labels.numpy(), protocol)
        if not all(is_reference(m) for m in exp.methods):
            check_budget(len(split.pool_indices), exp.budget, exp.iterations, protocol.initial_labels)
        check_val_folds(len(split.val_indices), command.val_folds, exp.methods)
    jobs = []
    for run, protocol in runs:
        prepare_run(spec, exp.data, protocol, run, command.out, options.device, options.progress, exp.log)
        for unsupervised in command.unsupervised:
            for method in exp.methods:
                jobs.append(CentralJob(
                    dataset=spec.name, data_root=str(command.data_root) if command.data_root else None,
                    protocol=protocol, run=run, out=command.out, options=options,
                    settings=run_settings(command, exp, method, unsupervised), keep_checkpoints=command.keep_checkpoints))
    return jobs


def run_central(command: Command, exp: Experiment) -> None:
    """Every central job: one after the other in this process, or (--executor ray) as Ray tasks on this
    machine's cores or a cluster's."""
    jobs = central_jobs(command, exp)
    if command.executor == "ray":
        from asynchronous import executor  # noqa: PLC0415  (Ray loads only when asked for)

        started = executor.connect(command.ray_address)
        try:
            executor.run_grid([replace(job, options=replace(job.options, progress=False)) for job in jobs],
                              command.threads or 1, exp.log, command.gpus_per_task or 0.0)
        finally:
            if started:
                executor.shutdown()
    elif command.executor == "lockstep":
        from common.lockstep import run_lockstep  # noqa: PLC0415

        run_lockstep(jobs, exp.data, exp.log)
    else:
        for job in jobs:
            run_central_job(job, exp.data, exp.log)


def asynchronous_jobs(command: Command, exp: Experiment) -> list[tuple[RunContext, AsyncJob]]:
    """--async-workers 1 or more: one asynchronous run per (run, initial model, method) with DA, per (run, initial
    model) with RA; every run's split and pool size are checked here, before Ray starts."""
    spec, options = exp.spec, exp.options
    timing = command.asynchronous.asynchrony(exp.budget, exp.iterations)
    runs = [(run, asynchronous_experiment.asynchronous_protocol(protocol, timing))
            for run, protocol in protocols(command, spec)]
    for _run, protocol in runs:  # every check before the first file is written
        asynchronous_experiment.check_pool(len(draw_split(spec, exp.data.train.labels.numpy(), protocol).pool_indices),
                                           timing, protocol.initial_labels)
    jobs = []
    for run, protocol in runs:
        ctx = prepare_run(spec, exp.data, protocol, run, command.out, options.device, options.progress, exp.log)
        for unsupervised in command.unsupervised:
            for method, strategies in command.asynchronous.assignments(exp.methods):
                settings = asynchronous_experiment.run_settings(run_settings(command, exp, method, unsupervised),
                                                                method, timing)
                jobs.append((ctx, AsyncJob(run=run, timing=timing, strategies=strategies, settings=settings)))
    return jobs


def federated_jobs(command: Command, exp: Experiment) -> list:
    """--clients > 1: one federated job per (run, initial model, method); the split, budget and client
    partition of every run are checked here, before any simulation or deployment starts."""
    spec, options = exp.spec, exp.options
    fed = command.federated.federation()
    runs = [(run, federated_experiment.federated_protocol(protocol, fed)) for run, protocol in protocols(command, spec)]
    labels = exp.data.train.labels.numpy()
    for _run, protocol in runs:  # every check before the first file is written
        pool_labels = labels[draw_split(spec, labels, protocol).pool_indices]
        check_budget(len(pool_labels), exp.budget, exp.iterations, protocol.initial_labels)
        federated_experiment.check_partition(pool_labels, spec.num_classes, fed, protocol.seed, exp.budget)
    for run, protocol in runs:
        prepare_run(spec, exp.data, protocol, run, command.out, options.device, log=exp.log)
    return federated_experiment.make_jobs(
        runs, fed, command.unsupervised, exp.methods, dataset=spec.name,
        data_root=str(command.data_root) if command.data_root else None, budget=exp.budget, cycles=exp.iterations,
        schedule=exp.schedule, descriptor_layers=options.descriptor_layers, top_k=options.top_k,
        batch_size=options.batch_size, device=options.device.type, client_timeout=command.federated.client_timeout,
        extra={"threads": 1},
    )
