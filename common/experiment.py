"""One active-learning run, resumable, with its state in files (docs/method.md#active-learning-loop).

Layout under <out>/<dataset>/ir<IR>_val<V>/run<R>/  (V: validation images per class):
  protocol.json, split.npz           the run's validation/pool indices (shared by all methods)
  initial/random_m<E>.pt             randomly initialised model of ensemble member E
  initial/rotation_m<E>.pt           the same after rotation pretraining (classifier random)
  initial/simclr_m<E>.pt             the same after contrastive (SimCLR) pretraining (classifier random)
  unsup<U>/<method>/settings.json    what the run was started with (checked on resume)
  unsup<U>/<method>/metrics.jsonl    one line per finished iteration (docs/method.md#metrics-records)
  unsup<U>/<method>/acquired_<B>.npy train-split indices acquired at iteration B
  unsup<U>/<method>/model_<B>.pt     weights after iteration B (the latest, and --keep-checkpoints)
  unsup<U>/<method>+trainval/...     the same with --train-on-validation
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Container
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common import loop
from common import records as contract
from common import storage
from common.datasets import DATASETS, DatasetSpec, Split
from common.errors import UserError
from common.images import Images, take
from common.method_run import MethodRun
from common.methods import ALL_TRAIN, is_reference
from common.naming import INITIAL_KINDS, protocol_variant, run_folder, run_label, run_prefix
from common.oracle import Oracle
from common.schedule import Schedule
from common.seeding import numpy_rng, torch_global_seed, torch_seed
from common.splits import PoolSplit, make_split
from common.strategies import STRATEGIES, AcquisitionOptions, AcquisitionState
from common.unsup import pool_check_positions, pretrain_rotation, transfer_weights
from common.validation_folds import EMPTY_FOLD_FALLBACK, label_folds, stratified_folds



@dataclass(frozen=True)
class Protocol:
    """What fixes a run's data split (docs/method.md#data-protocol)."""

    dataset: str
    imbalance: float
    val_per_class: int
    minority_classes: tuple[int, ...]
    seed: int  # base_seed + run
    imbalance_rule: str = "joint"  # common.splits.IMBALANCE_RULES
    federation: str = ""  # federated runs: clients, partition and training (federated.task.Federation.name)
    asynchronous: str = ""  # asynchronous runs: workers, servers, assignment, split, batch (asynchronous.experiment)
    minority_set: str = ""  # a minority set the user chose (minority_set_name); "" for the dataset's default rule
    initial_labels: int = 0  # pool images labelled at random before the first acquisition (--initial-labels)

    @property
    def variant(self) -> str:
        """The chosen-minority, starting-set and distributed part of the protocol's folder name ("" for a
        default central run)."""
        return protocol_variant(self.federation, self.asynchronous, self.minority_set, self.initial_labels)


@dataclass(frozen=True)
class RunSettings:
    """What fixes the results of one method's run beyond its protocol."""

    method: str
    unsupervised: int
    iterations: int
    budget: int
    schedule: Schedule
    ensemble: int
    mc_samples: int
    descriptor_layers: tuple[str, ...]
    top_k: int
    train_on_validation: bool = False  # like-for-like baseline: every method also trains on the validation set
    vaal_steps: int = 300
    val_folds: int = 5  # fk-nn-split / fk-nn-kfold: validation folds, one held out of training

    def recorded(self) -> "RecordedSettings":
        return RecordedSettings(self.method, self.unsupervised, self.budget, self.ensemble, self.train_on_validation)


@dataclass(frozen=True)
class RecordedSettings:
    """What every metrics record says about its method's settings, in every mode (run_record)."""

    method: str
    unsupervised: int
    budget: int
    ensemble: int = 1
    train_on_validation: bool = False


@dataclass
class DatasetArrays:
    """The loaded train and test splits of a dataset (read once, shared by every run)."""

    train: Split
    test: Split


@lru_cache(maxsize=2)
def dataset_arrays(dataset: str, data_root: str | None) -> DatasetArrays:
    """A dataset's train and test splits, read once per process (a federated server, a Ray task of a grid)."""
    spec = DATASETS.get(dataset)
    root = Path(data_root) if data_root else None
    return DatasetArrays(train=spec.load(root, True), test=spec.load(root, False))


@dataclass
class RunContext:
    """A run's paths and data: the pool and validation Splits cut from train by its split."""

    spec: DatasetSpec
    protocol: Protocol
    run: int
    folder: Path
    split: PoolSplit
    pool: Split
    validation: Split
    test: Split
    device: torch.device
    progress: bool = False
    log: Callable[[str], None] = field(default=print)


def _plain(obj) -> dict:
    """JSON form of a settings dataclass, so stored and current settings compare equal."""
    return json.loads(json.dumps(asdict(obj)))


def prepare_run(
    spec: DatasetSpec, data: DatasetArrays, protocol: Protocol, run: int, out: Path, device: torch.device,
    progress: bool = False, log: Callable[[str], None] = print,
) -> RunContext:
    """Load (or draw and save) the run's split and cut its pool and validation sets."""
    folder = run_folder(out, protocol.dataset, protocol.imbalance, protocol.val_per_class, run, protocol.variant)
    split = _load_or_make_split(spec, data, protocol, folder)
    storage.tidy(folder / "initial")

    return RunContext(
        spec=spec, protocol=protocol, run=run, folder=folder, split=split, pool=subset(data.train, split.pool_indices),
        validation=subset(data.train, split.val_indices), test=data.test, device=device, progress=progress, log=log,
    )


SPLIT_ARRAYS = ("val_indices", "pool_indices")


def _load_or_make_split(spec: DatasetSpec, data: DatasetArrays, protocol: Protocol, folder: Path) -> PoolSplit:
    """The run's stored split, or a new one saved under the run folder's lock (one process draws it).

    A new split is drawn before anything is written, so a protocol the data cannot satisfy leaves
    no folder behind.
    """
    protocol_path, split_path = folder / "protocol.json", folder / "split.npz"

    def draw() -> PoolSplit:
        return draw_split(spec, data.train.labels.numpy(), protocol)

    stored = protocol_path.exists() and split_path.exists()
    split = None if stored else draw()
    with storage.exclusive(folder, wait=True):
        storage.remove_stale_temporaries(folder)
        if protocol_path.exists() and split_path.exists():
            return _stored_split(protocol, folder, len(data.train))
        split = split or draw()
        storage.save_arrays(split_path, val_indices=split.val_indices, pool_indices=split.pool_indices)
        storage.write_json(protocol_path, _plain(protocol))
        return split


def draw_split(spec: DatasetSpec, train_labels: np.ndarray, protocol: Protocol) -> PoolSplit:
    """The run's validation/pool split, a pure function of the labels and the protocol (a federated
    client recomputes it to find its own pool)."""
    return make_split(train_labels, spec.num_classes, protocol.val_per_class, protocol.imbalance,
                      protocol.minority_classes, numpy_rng(protocol.seed, "split"), protocol.imbalance_rule)


def _stored_split(protocol: Protocol, folder: Path, train_size: int) -> PoolSplit:
    """The split saved in `folder`, refused when it was made with another protocol or is damaged."""
    protocol_path, split_path = folder / "protocol.json", folder / "split.npz"
    required = {f.name for f in fields(Protocol) if f.default is MISSING}
    stored = {**_defaults_of_later_fields(Protocol),
              **storage.read_json(protocol_path, contract.object_with_fields(required))}
    if stored != _plain(protocol):
        raise UserError(f"{folder} was made with a different protocol ({stored}); use another --out or delete it")
    arrays = storage.load_arrays(split_path, required=SPLIT_ARRAYS)
    problem = _split_problem(arrays["val_indices"], arrays["pool_indices"], train_size)
    if problem:
        raise UserError(f"corrupted file {split_path} ({problem}); delete the run folder to redo it")
    return PoolSplit(val_indices=arrays["val_indices"], pool_indices=arrays["pool_indices"])


def _split_problem(val_indices: np.ndarray, pool_indices: np.ndarray, train_size: int) -> str | None:
    """What is wrong with stored split indices (None when they are sorted, distinct train positions)."""
    for name, indices in (("val_indices", val_indices), ("pool_indices", pool_indices)):
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            return f"{name} is not a 1-D integer array"
        if len(indices) and (indices.min() < 0 or indices.max() >= train_size):
            return f"{name} reaches outside the {train_size} train images"
        if np.any(np.diff(indices) <= 0):
            return f"{name} is not sorted and distinct"
    if np.intersect1d(val_indices, pool_indices).size:
        return "validation and pool share images"
    return None


def initial_model_path(ctx: RunContext, kind: str, member: int) -> Path:
    return ctx.folder / "initial" / f"{kind}_m{member}.pt"


def ensure_initial_models(ctx: RunContext, members: int, kinds: tuple[str, ...] = INITIAL_KINDS) -> None:
    """Create, for each ensemble member, the random model and the self-supervised ones asked for in `kinds`
    (rotation, simclr).

    A pretrained model's classifier is the random model's, so the starts differ only in what pretraining
    learnt.
    """
    with storage.exclusive(ctx.folder / "initial", wait=True):  # one pretraining, however many workers
        storage.remove_stale_temporaries(ctx.folder / "initial")
        _ensure_initial_models(ctx, members, kinds)


def _ensure_initial_models(ctx: RunContext, members: int, kinds: tuple[str, ...]) -> None:
    spec, seed = ctx.spec, ctx.protocol.seed
    for member in range(members):
        random_path = initial_model_path(ctx, "random", member)
        if not random_path.exists():
            with torch_global_seed(torch_seed(seed, "init", member)):
                model = spec.model(spec.num_classes, False)
            storage.save_checkpoint(random_path, {"state": model.state_dict()})
        for kind, pretrain in (("rotation", _rotation_state), ("simclr", _simclr_state)):
            path = initial_model_path(ctx, kind, member)
            if kind not in kinds or path.exists():
                continue
            started = time.perf_counter()
            random_state = storage.load_checkpoint(random_path, "state")
            state, note, extra = pretrain(ctx, member, random_state)
            storage.save_checkpoint(path, {"state": state, **extra})
            ctx.log(f"[{spec.name} run{ctx.run}] {kind} pretraining member {member}: {note} "
                    f"({time.perf_counter() - started:.0f}s)")


def _rotation_state(ctx: RunContext, member: int, random_state: dict) -> tuple[dict, str, dict]:
    """Rotation pretraining (common/unsup.py): a 4-way copy of the network, its weights moved into the random
    model but for the classifier."""
    spec, seed = ctx.spec, ctx.protocol.seed
    with torch_global_seed(torch_seed(seed, "rotation-init", member)):
        rotation_model = spec.model(4, False)
    check = rotation_check_images(ctx)
    pretrained, accuracy = pretrain_rotation(
        rotation_model, ctx.pool.images, check, spec.pretrain_schedule, spec.normalise,
        torch_seed(seed, "rotation-train", member), ctx.device, ctx.progress,
    )
    return (transfer_weights(pretrained, random_state, spec.classifier),
            f"rotation accuracy {accuracy:.3f} on {len(check)} {'validation' if len(ctx.validation) else 'pool'} "
            f"images", {"rotation_accuracy": accuracy})


def rotation_check_images(ctx: RunContext) -> Images:
    """The images rotation pretraining keeps its best epoch on: the validation images, or (the cold start) a
    seeded sample of the pool."""
    if len(ctx.validation):
        return ctx.validation.images
    return take(ctx.pool.images, pool_check_positions(len(ctx.pool), ctx.protocol.seed))


def _simclr_state(ctx: RunContext, member: int, random_state: dict) -> tuple[dict, str, dict]:
    """Contrastive pretraining (common/contrastive.py) of the random model itself; its classifier is untouched."""
    from common.contrastive import pretrain_simclr, simclr_schedule  # noqa: PLC0415

    spec = ctx.spec
    model = build_models(spec, [random_state], mc_dropout=False)[0]
    state, losses = pretrain_simclr(model, ctx.pool.images, simclr_schedule(spec.pretrain_schedule, len(ctx.pool)),
                                    spec.normalise, spec.penultimate, torch_seed(ctx.protocol.seed, "simclr-train",
                                                                                  member), ctx.device, ctx.progress)
    return (transfer_weights(state, random_state, spec.classifier),
            f"contrastive loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} epochs", {"losses": losses})


def build_models(spec: DatasetSpec, states: list[dict], mc_dropout: bool) -> list[nn.Module]:
    models = []
    for state in states:
        model = spec.model(spec.num_classes, mc_dropout)
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"checkpoint does not fit the {spec.name} model: {_load_problem(exc)}") from None
        models.append(model)
    return models


def _load_problem(error: Exception, limit: int = 200) -> str:
    """The first informative line of a load_state_dict error (torch puts a bare header line first), shortened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    line = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def method_folder(ctx: RunContext, settings: RunSettings) -> Path:
    return ctx.folder / f"unsup{settings.unsupervised}" / run_label(settings.method, settings.train_on_validation)


def central_method_run(ctx: RunContext, settings: RunSettings) -> MethodRun:
    """The run folder of a central method (active learning or the all-train reference)."""
    return method_run(ctx, method_folder(ctx, settings), settings_that_matter(settings),
                      run_label(settings.method, settings.train_on_validation), settings.unsupervised)


# RunSettings fields that change every method's results; a strategy adds those it reads (Strategy.run_settings).
# The iteration count is not one: iteration b's results do not depend on it, so a finished run can be extended.
SHARED_SETTINGS = ("method", "unsupervised", "budget", "schedule", "ensemble", "train_on_validation")
REFERENCE_SETTINGS = ("method", "unsupervised", "schedule", "ensemble", "train_on_validation")


def settings_that_matter(settings: RunSettings) -> dict:
    """The settings that affect this method's results (JSON form): stored in settings.json and compared
    on resume, so a flag the method ignores (say --mc-samples for random) never blocks a finished run."""
    if is_reference(settings.method):
        names = REFERENCE_SETTINGS
    else:
        names = SHARED_SETTINGS + STRATEGIES.get(settings.method).run_settings
    plain = _plain(settings)
    return {name: plain[name] for name in names}


def method_run(ctx: RunContext, folder: Path, settings: dict, label: str, unsupervised: int,
               write_settings: bool = True) -> MethodRun:
    """The run folder `folder` of a method of this run (any mode): `settings` its settings that matter (JSON form),
    `label` its method label; settings added in later versions compare at their RunSettings defaults."""
    protocol = ctx.protocol
    return MethodRun(folder=folder, settings=settings, log=ctx.log, write_settings=write_settings,
                     prefix=run_prefix(ctx.spec.name, protocol.imbalance, protocol.variant, unsupervised, label, ctx.run),
                     later_defaults=settings_defaults())


def settings_defaults() -> dict:
    """RunSettings fields added in later versions, at their defaults: older settings.json files compare as if
    they held them."""
    return _defaults_of_later_fields(RunSettings)


def _defaults_of_later_fields(kind: type) -> dict:
    """A settings dataclass's fields that have defaults, at those defaults (JSON form): files written
    before a field existed compare as if they held its default."""
    return json.loads(json.dumps({f.name: f.default for f in fields(kind) if f.default is not MISSING}))


def initial_label_positions(pool_size: int, count: int, seed: int) -> np.ndarray:
    """The starting labelled set (--initial-labels): `count` pool positions drawn at random, sorted; a pure
    function of the run's seed, so every method of a run starts from the same labels."""
    if count > pool_size:
        raise UserError(f"--initial-labels {count} is more than the pool's {pool_size} images")
    return np.sort(numpy_rng(seed, "initial-labels").choice(pool_size, size=count, replace=False)).astype(np.int64)


def load_acquired(ctx: RunContext, folder: Path, records: list[dict], budget: int, exact: bool = True,
                  initial: np.ndarray | None = None) -> np.ndarray:
    """Pool positions of every image acquired by the finished iterations, in order, each file checked:
    `budget` distinct members of this run's pool (at most `budget` when not `exact`: a federated client
    may miss an acquisition), none acquired twice nor in the starting set `initial`, as many as the metrics
    records count (their `labelled` includes the starting set)."""
    pool_indices = ctx.split.pool_indices
    labelled = np.empty(0, dtype=np.int64) if initial is None else np.asarray(initial, dtype=np.int64)
    start = len(labelled)
    for iteration, record in enumerate(records):
        path = folder / f"acquired_{iteration:03d}.npy"
        indices = storage.load_indices(path)
        positions = np.minimum(np.searchsorted(pool_indices, indices), len(pool_indices) - 1)
        problem = None
        if len(indices) != budget if exact else len(indices) > budget:
            problem = f"holds {len(indices)} indices, not the budget {budget}"
        elif not np.array_equal(pool_indices[positions], indices):
            outside = indices[pool_indices[positions] != indices]
            problem = f"holds {len(outside)} indices that are not in the run's pool (e.g. {outside[0]})"
        elif len(np.unique(positions)) != len(positions):
            problem = "holds an image twice"
        elif np.isin(positions, labelled).any():
            problem = "repeats images acquired in an earlier iteration (or labelled in the starting set)"
        if problem is None and record["labelled"] != len(labelled) + len(indices):
            problem = f"does not match metrics.jsonl ({record['labelled']} labelled after iteration {iteration})"
        if problem:
            raise UserError(f"inconsistent results: {path} {problem}; delete the method folder {folder} to redo it")
        labelled = np.concatenate([labelled, positions])
    return labelled[start:]


def run_active_learning(
    ctx: RunContext, settings: RunSettings, options: AcquisitionOptions, keep_checkpoints: Container[int] = ()
) -> list[dict]:
    """Run (or resume) one method's AL run; returns every iteration's metrics record.

    The latest iteration's weights are always kept (resuming needs them); earlier ones only
    if their iteration is in `keep_checkpoints` (visualize.py reads them). A run another
    process is working on is skipped.
    """
    run = central_method_run(ctx, settings)
    return run.resume(lambda records: loop.run_steps(
        active_learning_steps(ctx, settings, options, keep_checkpoints, run, records)))


def active_learning_steps(
    ctx: RunContext, settings: RunSettings, options: AcquisitionOptions, keep_checkpoints: Container[int],
    run: MethodRun, records: list[dict],
) -> loop.Steps:
    """The AL run from its finished `records` on, as steps (common.loop.Steps): each training is yielded to the
    executor, which sends back its seconds; `run` must be open (MethodRun.resume or opened)."""
    spec, seed, folder = ctx.spec, ctx.protocol.seed, run.folder
    strategy = STRATEGIES.get(settings.method)
    start = len(records)
    if start >= settings.iterations:
        return records[: settings.iterations]

    if start == 0:
        kind = INITIAL_KINDS[settings.unsupervised]
        ensure_initial_models(ctx, settings.ensemble, kinds=(kind,))
        states = [storage.load_checkpoint(initial_model_path(ctx, kind, m), "state") for m in range(settings.ensemble)]
    else:
        states = run.restore(start - 1, "states")
        if len(states) != settings.ensemble:
            raise UserError(f"{loop.checkpoint_path(folder, start - 1)} holds {len(states)} models, not {settings.ensemble}")
    models = build_models(spec, states, strategy.mc_dropout)

    initial = initial_label_positions(len(ctx.pool), ctx.protocol.initial_labels, seed)
    oracle = Oracle(ctx.pool.labels, revealed=np.concatenate(
        [initial, load_acquired(ctx, folder, records, settings.budget, initial=initial)]))
    if start == 0 and len(initial):  # the starting set trains the model the first acquisition selects with
        images, labels = training_data(ctx, settings, oracle, -1)
        yield loop.Training(models, images, labels, settings.schedule, spec.normalise,
                            [torch_seed(seed, "train-initial", m) for m in range(len(models))], ctx.device,
                            ctx.progress, description="train on the starting set")
    for iteration in range(start, settings.iterations):
        read = acquisition_reference(ctx, settings, oracle, iteration)
        acquiring, strategy_name = strategy, settings.method
        if strategy.uses_validation_labels and not len(read):  # the cold start's first batch: nothing to read
            acquiring, strategy_name = STRATEGIES.get(EMPTY_FOLD_FALLBACK), EMPTY_FOLD_FALLBACK
        state = AcquisitionState(
            models=models, to_input=spec.normalise, pool=ctx.pool,
            unlabelled=np.setdiff1d(np.arange(len(ctx.pool)), oracle.labelled),
            validation=read, iteration=iteration, budget=settings.budget,
            rng=numpy_rng(seed, "acquire", iteration), seed=torch_seed(seed, "acquire", iteration), options=options,
            scratch=folder / "scratch", trained_before=len(initial) > 0,
        )
        chosen, acquire_seconds = loop.acquire(acquiring, state, strategy_name)
        if acquiring is not strategy:
            state.notes["acquired_with"] = strategy_name
        loop.save_acquired(folder, iteration, ctx.split.pool_indices[chosen])
        oracle.reveal(chosen)

        images, labels = training_data(ctx, settings, oracle, iteration)
        member_seeds = [torch_seed(seed, "train", iteration, m) for m in range(len(models))]
        train_seconds = yield loop.Training(models, images, labels, settings.schedule, spec.normalise, member_seeds,
                                            ctx.device, ctx.progress, description=f"train b={iteration}")
        validation_labels = len(ctx.validation) if strategy.uses_validation_labels or settings.train_on_validation else 0
        record = {**metrics_record(ctx, settings.recorded(), iteration, len(oracle.labelled), validation_labels, models, acquire_seconds,
                            train_seconds), **state.notes}
        loop.save_iteration(folder, iteration, models, record, keep_checkpoints)
        records.append(record)
        run.log_step(f"b={iteration}", record)
    return records


def validation_parts(ctx: RunContext, settings: RunSettings, iteration: int) -> tuple[Split, Split | None]:
    """(the validation images the acquisition at `iteration` reads, those trained on after it, or None).

    Every method reads the whole validation set and trains on it only with --train-on-validation, except
    the held-out-fold FK methods (fk-nn-split, fk-nn-kfold), which train on all folds but one and read
    the misses of a fold the acquiring model never saw. Without a validation set (the cold start) see
    `training_data`."""
    plan = STRATEGIES.get(settings.method).held_out_folds
    if plan is None or not len(ctx.validation):
        return ctx.validation, (ctx.validation if settings.train_on_validation else None)
    fold_of = stratified_folds(ctx.validation.labels.numpy(), settings.val_folds,
                               numpy_rng(ctx.protocol.seed, "validation-folds"))
    read, trained = plan.parts(fold_of, iteration, settings.val_folds)
    return subset(ctx.validation, read), subset(ctx.validation, trained)


def own_label_parts(ctx: RunContext, settings: RunSettings, oracle: Oracle, iteration: int
                    ) -> tuple[Split, np.ndarray] | None:
    """The cold start (--val-per-class 0) of a held-out-fold method: its own labels dealt into folds as they
    arrive (label_folds), the same plan as on a validation set: (the labelled images the acquisition at
    `iteration` reads, the pool positions trained on after it). None for every other run."""
    plan = STRATEGIES.get(settings.method).held_out_folds
    if plan is None or len(ctx.validation):
        return None
    labels = oracle.labels(oracle.labelled)
    read, trained = plan.parts(label_folds(labels.numpy(), settings.val_folds), iteration, settings.val_folds)
    return Split(images=take(ctx.pool.images, oracle.labelled[read]), labels=labels[torch.from_numpy(read)],
                 source=ctx.pool.source), oracle.labelled[trained]


def acquisition_reference(ctx: RunContext, settings: RunSettings, oracle: Oracle, iteration: int) -> Split:
    """The labelled images the acquisition at `iteration` reads (validation_parts, or own_label_parts)."""
    own = own_label_parts(ctx, settings, oracle, iteration)
    return own[0] if own else validation_parts(ctx, settings, iteration)[0]


def training_data(ctx: RunContext, settings: RunSettings, oracle: Oracle, iteration: int) -> tuple[Images, torch.Tensor]:
    """What the model trained after the acquisition at `iteration` (-1: on a starting set) trains on: every
    pool label plus the validation part it trains on (validation_parts), or, in the cold start of a
    held-out-fold method, its labels but the held-out fold (own_label_parts)."""
    own = own_label_parts(ctx, settings, oracle, iteration)
    if own:
        return take(ctx.pool.images, own[1]), oracle.labels(own[1])
    return loop.training_set(ctx.pool, oracle, validation_parts(ctx, settings, iteration)[1])


def subset(split: Split, positions: np.ndarray) -> Split:
    """The images and labels of `split` at `positions` (the run's pool and validation set, a validation fold)."""
    return Split(images=take(split.images, positions), labels=split.labels[torch.from_numpy(positions)],
                 source=split.source)



def run_all_train(ctx: RunContext, settings: RunSettings) -> list[dict]:
    """Train on every pool image with its label (the "all-train" reference line of the plots)."""
    run = central_method_run(ctx, settings)
    return run.resume(lambda records: _run_all_train(ctx, settings, run, records))


def _run_all_train(ctx: RunContext, settings: RunSettings, run: MethodRun, records: list[dict]) -> list[dict]:
    if records:
        return records
    kind = INITIAL_KINDS[settings.unsupervised]
    ensure_initial_models(ctx, settings.ensemble, kinds=(kind,))
    states = [storage.load_checkpoint(initial_model_path(ctx, kind, m), "state") for m in range(settings.ensemble)]
    models = build_models(ctx.spec, states, mc_dropout=False)
    oracle = Oracle(ctx.pool.labels)
    oracle.reveal(np.arange(len(ctx.pool)))
    images, labels = loop.training_set(ctx.pool, oracle, ctx.validation if settings.train_on_validation else None)
    member_seeds = [torch_seed(ctx.protocol.seed, "train", ALL_TRAIN, m) for m in range(len(models))]
    train_seconds = loop.fit(models, images, labels, settings.schedule, ctx.spec.normalise, member_seeds, ctx.device,
                             ctx.progress, description=ALL_TRAIN)
    validation_labels = len(ctx.validation) if settings.train_on_validation else 0
    record = metrics_record(ctx, settings.recorded(), 0, len(ctx.pool), validation_labels, models, 0.0, train_seconds)
    loop.save_iteration(run.folder, 0, models, record)
    run.log_step("trained once", record)
    return [record]


@dataclass(frozen=True)
class CentralJob:
    """One method's central run of an experiment grid: all a local loop or a Ray task (--executor ray) needs."""

    dataset: str
    data_root: str | None
    protocol: Protocol
    run: int
    out: Path
    settings: RunSettings
    options: AcquisitionOptions
    keep_checkpoints: Container[int] = ()


def run_central_job(job: CentralJob, data: DatasetArrays | None = None, log: Callable[[str], None] = print,
                    ) -> list[dict]:
    """Run (or resume) one job: active learning, or the all-train reference; `data` defaults to the dataset
    read once per process."""
    spec = DATASETS.get(job.dataset)
    data = data or dataset_arrays(job.dataset, job.data_root)
    ctx = prepare_run(spec, data, job.protocol, job.run, job.out, job.options.device, job.options.progress, log)
    if is_reference(job.settings.method):
        return run_all_train(ctx, job.settings)
    return run_active_learning(ctx, job.settings, job.options, job.keep_checkpoints)


def metrics_record(
    ctx: RunContext, settings: RecordedSettings, iteration: int, labelled: int, validation_labels: int,
    models: list[nn.Module], acquire_seconds: float, train_seconds: float,
) -> dict:
    report = loop.evaluate(models, ctx.test, ctx.spec.normalise, ctx.device, ctx.spec.num_classes,
                           ctx.protocol.minority_classes)
    return run_record(ctx, settings, iteration, labelled, validation_labels, report, acquire_seconds, train_seconds)


def run_record(
    ctx: RunContext, settings: RecordedSettings, iteration: int, labelled: int, validation_labels: int, report: dict,
    acquire_seconds: float, train_seconds: float,
) -> dict:
    """A metrics.jsonl line from a test `report` (loop.evaluate) measured elsewhere (an asynchronous server)."""
    return {
        "dataset": ctx.spec.name,
        "imbalance": ctx.protocol.imbalance,
        "run": ctx.run,
        "seed": ctx.protocol.seed,
        "method": settings.method,
        "unsupervised": settings.unsupervised,
        "iteration": iteration,
        "labelled": labelled,
        "validation_labels": validation_labels,
        **report,
        "acquire_seconds": round(acquire_seconds, 4),
        "train_seconds": round(train_seconds, 4),
        "budget": settings.budget,
        "val_per_class": ctx.protocol.val_per_class,
        "minority_classes": list(ctx.protocol.minority_classes),
        "minority_set": ctx.protocol.minority_set,
        "initial_labels": ctx.protocol.initial_labels,
        "pool_size": len(ctx.pool),
        "ensemble": settings.ensemble,
        "train_on_validation": settings.train_on_validation,
    }
