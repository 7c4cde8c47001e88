"""The driver of one asynchronous run: it walks the clock's events and hands the work to the actors.

With the simulated clock (the default) the driver replays `clock.simulate` and, for each event, sends
the matching call without waiting for its result: a request to its worker (with the model version it
uses, an object-store reference that may still be training), an arrival to the label store, a training
to its server. Ray runs them in parallel as their inputs become ready; because every input is fixed by
the timeline, the results are the same for a seed whatever Ray's scheduling, and the same as the
in-process run of the tests (`InProcess`). The driver blocks only when a model is published, until
the label store has written it.

With real latency the workers sleep the drawn delay and the driver applies arrivals and publications
in the order they really happen (`ray.wait`), so the run is not reproducible.

Resume: a killed run restarts from its files. Simulated: the timeline is replayed from the start,
requests and trainings already in queries.jsonl / metrics.jsonl are checked against it and not redone.
Real: the labels and trainings found are kept and the clock restarts.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from asynchronous import clock
from asynchronous.actors import LabelStore, Server, Worker
from asynchronous.shards import make_shards
from common import loop, storage
from common import records as contract
from common.errors import UserError
from common.experiment import (
    INITIAL_KINDS, RunContext, RunSettings, ensure_initial_models, initial_label_positions, initial_model_path,
    load_acquired, method_run, settings_that_matter, subset,
)
from common.method_run import MethodRun, finished_records
from common.naming import run_label
from common.oracle import Oracle
from common.seeding import torch_seed
from common.strategies import STRATEGIES, AcquisitionOptions

POLL_SECONDS = 1.0  # every wait on Ray returns at least this often (Ctrl-C, dead actors)
ANSWER_SECONDS = 3600.0  # a call with no answer for this long stops the run (resume with the same command)
ACTOR_RESTARTS = 3


@dataclass(frozen=True)
class AsyncJob:
    """One asynchronous run: a protocol (its `asynchronous` names the timing), an initial model, a
    strategy per worker."""

    run: int
    timing: clock.Asynchrony
    strategies: tuple[str, ...]  # worker w uses strategies[w]
    settings: RunSettings  # method = the run's label: the strategy (DA) or the strategies joined by "+" (RA)

    @property
    def label(self) -> str:
        """The method run's folder and curve name (common.naming.run_label)."""
        return run_label(self.settings.method, self.settings.train_on_validation, sync=self.timing.sync)

    def settings_json(self) -> dict:
        """What changes the run's results beyond its protocol folder (settings.json, checked on resume)."""
        plain = {}
        for strategy in sorted(set(self.strategies)):
            plain |= settings_that_matter(replace(self.settings, method=strategy))
        timing = asdict(self.timing)
        return {**plain, "method": self.settings.method, "strategies": list(self.strategies),
                **{k: timing[k] for k in ("sync", "trainings", "latency_mode", "train_time")},
                "latency": list(self.timing.latency)}


def method_folder(ctx: RunContext, job: AsyncJob) -> Path:
    return ctx.folder / f"unsup{job.settings.unsupervised}" / job.label


# ---------------------------------------------------------------------------------------------- backends
class InProcess:
    """Every call made at once in this process, one after the other (tests; the same results as Ray)."""

    def create(self, cls, *args, role: str):
        return cls(*args)

    def address(self, actor):
        """How other parties reach `actor` (actors.ask)."""
        return actor

    def call(self, actor, method: str, *args, returns: int = 1):
        return getattr(actor, method)(*args)

    def put(self, value):
        return value

    def get(self, handle, what: str):
        return handle

    def first_done(self, handles: list) -> list:
        return handles[:1]

    def wait_started(self) -> None:
        pass

    def close(self) -> None:
        pass


class RayActors:
    """Ray actors sharing the cluster's CPUs in fractions (nothing stays pending on 2 cores); the label
    store sits on this node (it writes --out), workers and servers restart when they die."""

    def __init__(self, actors: int, gpu: bool) -> None:
        import ray  # noqa: PLC0415

        self.ray = ray
        cpus = ray.cluster_resources().get("CPU", 1.0)
        self.resources = {"num_cpus": max(0.01, math.floor(min(1.0, cpus / actors) * 100) / 100)}  # never above
        if gpu:
            self.resources["num_gpus"] = math.floor(1000 / actors) / 1000
        self.actors: list = []
        self.names: dict = {}

    def create(self, cls, *args, role: str):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

        options = dict(self.resources)
        if role == "store":
            here = self.ray.get_runtime_context().get_node_id()
            options |= {"max_restarts": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False),
                        "name": f"fkal-label-store-{uuid.uuid4().hex}"}
        else:
            options |= {"max_restarts": ACTOR_RESTARTS, "max_task_retries": ACTOR_RESTARTS}
        actor = self.ray.remote(cls).options(**options).remote(*args)
        self.actors.append(actor)
        self.names[actor] = options.get("name")
        return actor

    def address(self, actor) -> str:
        """The actor's name: a restarted worker looks the label store up by it (a handle given to an actor
        that may restart would pin it to the object store)."""
        return self.names[actor]

    def call(self, actor, method: str, *args, returns: int = 1):
        bound = getattr(actor, method)
        return (bound.options(num_returns=returns) if returns > 1 else bound).remote(*args)

    def put(self, value):
        return self.ray.put(value)

    def get(self, ref, what: str):
        """The value of `ref`; an actor's UserError stays one line, a dead actor says how to go on."""
        deadline = time.monotonic() + ANSWER_SECONDS
        while not self.ray.wait([ref], timeout=POLL_SECONDS)[0]:
            if time.monotonic() > deadline:
                raise UserError(f"no answer from {what} in {ANSWER_SECONDS:.0f}s; run the same command to resume")
        try:
            return self.ray.get(ref, timeout=POLL_SECONDS)
        except self.ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, UserError):
                raise UserError(str(error.cause)) from None
            raise
        except self.ray.exceptions.RayActorError as error:
            raise UserError(f"{what} failed ({type(error).__name__}); run the same command to resume") from None

    def first_done(self, refs: list) -> list:
        return self.ray.wait(refs, num_returns=1, timeout=POLL_SECONDS)[0]

    def wait_started(self) -> None:
        """Until every actor is up (starting one imports torch: seconds that are no annotator's delay)."""
        for number, actor in enumerate(self.actors):
            self.get(actor.__ray_ready__.remote(), f"actor {number}")

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors.clear()
        self.names.clear()


# ---------------------------------------------------------------------------------------------- the run
def run_asynchronous(ctx: RunContext, job: AsyncJob, options: AcquisitionOptions, backend_for: Callable[[int], object],
                     ) -> list[dict]:
    """Run (or resume) one asynchronous run; returns its metrics records, one per training. A run another
    process is working on is skipped. `backend_for(actors)` gives InProcess() or RayActors."""
    run = method_run(ctx, method_folder(ctx, job), job.settings_json(), job.label, job.settings.unsupervised,
                     write_settings=False)  # the label store writes settings.json
    return run.resume(lambda records: AsyncRun(ctx, job, options, run).run(backend_for, records))


class AsyncRun:
    """One run's state on the driver: its files checked, its actors, the models published so far."""

    def __init__(self, ctx: RunContext, job: AsyncJob, options: AcquisitionOptions, method_run: MethodRun) -> None:
        self.ctx, self.job, self.options, self.method_run = ctx, job, options, method_run
        self.folder = method_run.folder
        self.timing, self.spec = job.timing, ctx.spec
        self.waits: list[float] = []
        # the starting labelled set (--initial-labels): labelled before any request, in no worker's shard
        self.initial = initial_label_positions(len(ctx.pool), ctx.protocol.initial_labels, ctx.protocol.seed)

    def run(self, backend_for: Callable[[int], object], records: list[dict]) -> list[dict]:
        job, ctx = self.job, self.ctx
        if len(records) >= self.timing.trainings:  # finished: its files are checked all the same
            self._arrived(self._stored_shards(), records)
            return records[: self.timing.trainings]
        kind = INITIAL_KINDS[job.settings.unsupervised]
        ensure_initial_models(ctx, 1, kinds=(kind,))
        initial = storage.load_checkpoint(initial_model_path(ctx, kind, 0), "state")
        shards = self._shards(initial)
        arrived = self._arrived(shards, records)
        self.backend = backend = backend_for(1 + self.timing.workers + self.timing.servers)
        try:
            self._start_actors(shards, arrived, records)
            self.weights = {0: backend.put(self._version_zero(initial))}
            for number in range(1, len(records) + 1):
                self.weights[number] = backend.put(self._checkpoint(number))
            if self.timing.latency_mode == "real":
                self._real(shards, arrived, records)
            else:
                self._simulated(shards, arrived, records)
        finally:
            backend.close()
        return finished_records(self.folder)

    def _version_zero(self, initial: dict) -> dict:
        """The model every worker's first request uses: the run's initial weights, trained on the starting set
        when there is one (AAL's initial model), the same way every time (a resumed run trains it again)."""
        if not len(self.initial):
            return initial
        model = self.spec.model(self.spec.num_classes, False)
        model.load_state_dict(initial)
        oracle = Oracle(self.ctx.pool.labels, revealed=self.initial)
        images, labels = loop.training_set(self.ctx.pool, oracle)
        loop.fit([model], images, labels, self.job.settings.schedule, self.spec.normalise,
                 [torch_seed(self.ctx.protocol.seed, "train-initial", 0)], self.options.device)
        return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}

    # ------------------------------------------------------------------ files
    def _stored_shards(self) -> list[np.ndarray]:
        """The shards (pool positions) in shards.npz, checked to split the run's pool less the starting set."""
        path, workers, pool_indices = self.folder / "shards.npz", self.timing.workers, self.ctx.split.pool_indices
        if not path.exists():
            raise UserError(f"inconsistent results: {path} is missing beside finished trainings; delete the method "
                            f"folder {self.folder} to redo it")
        arrays = storage.load_arrays(path, required=[f"worker{w}" for w in range(workers)])
        shards = [np.minimum(np.searchsorted(pool_indices, arrays[f"worker{w}"]), len(pool_indices) - 1)
                  for w in range(workers)]
        inside = all(np.array_equal(pool_indices[s], arrays[f"worker{w}"]) for w, s in enumerate(shards))
        if not inside or not np.array_equal(np.sort(np.concatenate(shards)), self._shardable()):
            raise UserError(f"corrupted file {path} (the shards do not split the run's pool); delete the method "
                            f"folder {self.folder} to redo it")
        return shards

    def _shards(self, initial: dict) -> list[np.ndarray]:
        """The stored shards (pool positions), or new ones (the label store writes them)."""
        if (self.folder / "shards.npz").exists():
            return self._stored_shards()
        model = self.spec.model(self.spec.num_classes, False)
        model.load_state_dict(initial)
        rest = self._shardable()
        parts = make_shards(self.timing.split, subset(self.ctx.pool, rest), self.timing.workers,
                            self.ctx.protocol.seed, model, self.spec.normalise, self.spec.penultimate,
                            self.options.device, self.options.batch_size)
        return [rest[part] for part in parts]

    def _shardable(self) -> np.ndarray:
        """Pool positions the workers share out: every one but the starting set's."""
        return np.setdiff1d(np.arange(len(self.ctx.pool)), self.initial)

    def _arrived(self, shards: list[np.ndarray], records: list[dict]) -> list[tuple[int, np.ndarray, dict]]:
        """(worker, pool positions, line) of every answered request in queries.jsonl, checked: in the worker's
        shard, never twice, numbered in order per worker, and matching the acquired files of the trainings."""
        path, pool_indices = self.folder / "queries.jsonl", self.ctx.split.pool_indices
        owner = np.full(len(pool_indices), -1)
        for worker, shard in enumerate(shards):
            owner[shard] = worker
        arrived = []
        for number, line in enumerate(contract.check_queries(path), start=1):  # order and duplicates checked
            indices = np.asarray(line["indices"], dtype=np.int64)
            positions = np.minimum(np.searchsorted(pool_indices, indices), len(pool_indices) - 1)
            worker = line["worker"]
            problem = None
            if worker >= self.timing.workers:
                problem = f"worker {worker} of a run with {self.timing.workers} workers"
            elif not np.array_equal(pool_indices[positions], indices) or (owner[positions] != worker).any():
                problem = "images outside the worker's shard"
            if problem:
                raise UserError(f"inconsistent results: {path} line {number}: {problem}; delete the method folder "
                                f"{self.folder} to redo it")
            arrived.append((worker, positions, line))
        acquired = load_acquired(self.ctx, self.folder, records, len(pool_indices), exact=False, initial=self.initial)
        in_order = np.concatenate([positions for _, positions, _ in arrived]) if arrived else np.empty(0, np.int64)
        if not np.array_equal(acquired, in_order[: len(acquired)]):
            raise UserError(f"inconsistent results: the acquired files of {self.folder} do not match queries.jsonl; "
                            f"delete the method folder to redo it")
        return arrived

    def _checkpoint(self, number: int) -> dict:
        return self.method_run.restore(number - 1, "states")[0]

    # ------------------------------------------------------------------ actors
    def _start_actors(self, shards, arrived, records) -> None:
        job, ctx, backend = self.job, self.ctx, self.backend
        strategies = [STRATEGIES.get(name) for name in job.strategies]
        uses_validation = any(s.uses_validation_labels for s in strategies) or job.settings.train_on_validation
        self.fields = {
            "dataset": self.spec.name, "imbalance": ctx.protocol.imbalance, "run": ctx.run, "seed": ctx.protocol.seed,
            "method": job.settings.method, "unsupervised": job.settings.unsupervised,
            "val_per_class": ctx.protocol.val_per_class, "asynchronous": self.timing.name(), "sync": self.timing.sync,
            "workers": self.timing.workers, "servers": self.timing.servers, "assignment": self.timing.assignment,
            "split": self.timing.split, "query_batch": self.timing.query_batch,
            "train_threshold": self.timing.threshold, "latency_range": list(self.timing.latency),
            "latency_mode": self.timing.latency_mode, "train_time": self.timing.train_time,
        }
        self.store = backend.create(
            LabelStore, ctx, self.folder, job.settings, job.settings_json(), shards,
            [(worker, positions) for worker, positions, _ in arrived], records, self.fields,
            len(ctx.validation) if uses_validation else 0, self.initial, role="store")
        scratch = Path(tempfile.gettempdir()) / f"fkal-async-{os.getpid()}"
        store = backend.address(self.store)
        self.workers = [  # they fetch their shards from the label store, again after a restart
            backend.create(Worker, worker, job.strategies[worker], self.spec.name, store, self.options,
                           ctx.protocol.seed, scratch, 1, len(self.initial) > 0, role="worker")  # 1 thread
            for worker in range(self.timing.workers)
        ]
        mc_dropout = any(s.mc_dropout for s in strategies)
        self.servers = [
            backend.create(Server, server, self.spec.name, store, job.settings.schedule, self.options.device,
                           ctx.protocol.minority_classes, mc_dropout, ctx.protocol.seed, role="server")
            for server in range(self.timing.servers)
        ]

    def _ask(self, query: clock.Query, sleep: float = 0.0):
        return self.backend.call(self.workers[query.worker], "query", query.index, query.version,
                                 self.weights[query.version], query.size, sleep)

    def _arrive(self, query: clock.Query, now: float, result) -> None:
        wait = now - query.ready
        self.waits.append(wait)
        line = {"worker": query.worker, "query": query.index, "strategy": self.job.strategies[query.worker],
                "model_version": query.version, "size": query.size, "ready_at": query.ready,
                "issued_at": query.issued, "completed_at": now, "latency": query.latency, "simulated_wait": wait}
        self.backend.call(self.store, "reveal", line, result)

    def _train(self, training: clock.Training):
        """Send training `training.number` to its server; its weights are the new version's reference."""
        labelled = self.backend.call(self.store, "training_set", training.queries, self.job.settings.train_on_validation)
        weights, summary = self.backend.call(self.servers[training.server], "train", training.number,
                                             self.weights[training.base_version], labelled, returns=2)
        self.weights[training.number] = weights
        return summary

    def _publish(self, training: clock.Training, now: float, summary) -> None:
        """Have the label store write the published model, wait for it, and say so."""
        fields = {"model_version": training.number, "server": training.server, "base_version": training.base_version,
                  "due_at": training.due, "started_at": training.started, "published_at": now,
                  "queries": training.queries}
        call = self.backend.call(self.store, "record_training", fields, summary, self.weights[training.number])
        record = self.backend.get(call, f"training {training.number}")
        self.method_run.log_step(f"v{training.number} server={training.server}", record,
                                 f" clock={now:.0f}s mean wait={np.mean(self.waits) if self.waits else 0.0:.1f}s")

    # ------------------------------------------------------------------ clocks
    def _simulated(self, shards, arrived, records) -> None:
        """Replay the simulated timeline; what the files already hold is checked, not redone."""
        done = {(worker, line["query"]) for worker, _, line in arrived}
        results, summaries, arrivals = {}, {}, 0
        for kind, item, now in clock.simulate(self.timing, [len(s) for s in shards], self.ctx.protocol.seed,
                                              len(self.initial)):
            if kind == clock.ASK:
                if (item.worker, item.index) not in done:
                    results[item.worker, item.index] = self._ask(item)
            elif kind == clock.ARRIVE:
                if arrivals < len(arrived):
                    self._check_replay(arrived[arrivals][2], item)
                    self.waits.append(now - item.ready)
                else:
                    self._arrive(item, now, results.pop((item.worker, item.index)))
                arrivals += 1
            elif item.number <= len(records):
                if kind == clock.TRAIN:
                    self._check_training(records[item.number - 1], item)
            elif kind == clock.TRAIN:
                summaries[item.number] = self._train(item)
            else:
                self._publish(item, now, summaries.pop(item.number))

    def _check_replay(self, line: dict, query: clock.Query) -> None:
        if (line["worker"], line["query"], line["model_version"], len(line["indices"])) != (
                query.worker, query.index, query.version, query.size):
            raise UserError(f"inconsistent results: {self.folder / 'queries.jsonl'} does not follow this run's "
                            f"timeline (worker {line['worker']} request {line['query']}); delete the method folder "
                            f"to redo it")

    def _check_training(self, record: dict, training: clock.Training) -> None:
        """A stored training must be the timeline's: its labelled count (the starting set included, which the
        clock does not count) and the model version it started from."""
        expected = (len(self.initial) + training.labelled, training.base_version)
        if (record["labelled"], record["base_version"]) != expected:
            raise UserError(f"inconsistent results: training {training.number} in {self.folder / 'metrics.jsonl'} "
                            f"does not follow this run's timeline; delete the method folder to redo it")

    def _real(self, shards, arrived, records) -> None:
        """Real annotator delays: apply arrivals and publications as they happen (not reproducible)."""
        coordinator = clock.Coordinator(self.timing, [len(s) for s in shards], self.ctx.protocol.seed)
        coordinator.restore([(worker, len(positions)) for worker, positions, _ in arrived], len(records))
        self.backend.wait_started()
        started = time.perf_counter()
        pending: list[tuple[object, clock.Query | clock.Training]] = []  # (result handle, what it answers)
        while not coordinator.finished:
            now = time.perf_counter() - started
            pending += [(self._train(training), training) for training in coordinator.trainings_to_start(now)]
            pending += [(self._ask(query, sleep=query.latency), query) for query in coordinator.queries_to_issue(now)]
            if not pending:
                raise RuntimeError("nothing in flight before the last training")
            for handle in self.backend.first_done([handle for handle, _ in pending]):
                index = next(i for i, (candidate, _) in enumerate(pending) if candidate is handle)
                item, now = pending.pop(index)[1], time.perf_counter() - started
                if isinstance(item, clock.Query):
                    self.backend.get(handle, f"worker {item.worker}")
                    coordinator.on_arrival(item, now)
                    self._arrive(item, now, handle)
                else:
                    coordinator.on_publication(item)
                    self._publish(item, now, handle)
