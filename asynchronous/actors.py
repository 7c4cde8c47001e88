"""The parties of an asynchronous run: one label store, W workers, S servers.

Plain classes: the driver makes them Ray actors where it creates them (`ray.remote(cls)`), and the
tests also use them in one process. A worker or server keeps nothing that cannot be rebuilt: when Ray
restarts one (`max_restarts`), it gets its shard and the labels it already obtained back from the
label store, and repeats the request it was killed in with the same seed, so no acquired label is
lost or asked for twice.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import datasets_available  # noqa: F401  (registers every dataset, also inside Ray's worker processes)
from common import loop, storage
from common.datasets import DATASETS, Split
from common.experiment import RunContext, RunSettings, run_record, settings_defaults
from common.method_run import check_settings
from common.images import take
from common.oracle import LabelRequestError, Oracle
from common.schedule import Schedule
from common.seeding import numpy_rng, torch_seed
from common.strategies import STRATEGIES, AcquisitionOptions, AcquisitionState
from common.train import set_cpu_threads

KEEP_EVERY_CHECKPOINT = range(1 << 30)  # a resumed run needs every version a pending request may use
CATCH_UP_SECONDS = 600.0  # how long a restarted worker waits for the label store to hold its earlier labels


def ask(party, method: str, *args):
    """Call another party from inside one: `party` is the object itself (one process) or the name of its Ray
    actor (a name, not a handle, so a restarted actor finds it again; with a timeout)."""
    if isinstance(party, str):
        import ray  # noqa: PLC0415

        return ray.get(getattr(ray.get_actor(party), method).remote(*args), timeout=CATCH_UP_SECONDS)
    return getattr(party, method)(*args)


class LabelStore:
    """Owns the labelled set (an Oracle behind it) and is the one writer of the run's results: a
    queries.jsonl line per answered request, and per training its acquired_<B>.npy, weights and
    metrics.jsonl line (common.loop.save_acquired / save_iteration)."""

    def __init__(self, ctx: RunContext, folder: Path, settings: RunSettings, settings_json: dict,
                 shards: list[np.ndarray], arrived: list[tuple[int, np.ndarray]], trainings: list[dict],
                 fields: dict, validation_labels: int, initial: np.ndarray | None = None) -> None:
        """`arrived`: (worker, pool positions) of the requests answered before (a resumed run), in order;
        `trainings`: the finished trainings' metrics lines; `fields`: what every line of the run holds;
        `initial`: the starting labelled set (pool positions), labelled before every request."""
        self.ctx, self.folder, self.settings, self.fields = ctx, folder, settings, fields
        self.validation_labels = validation_labels
        storage.remove_stale_temporaries(folder)
        check_settings(folder, settings_json, later_defaults=settings_defaults())
        if not (folder / "shards.npz").exists():
            storage.save_arrays(folder / "shards.npz",
                                **{f"worker{w}": ctx.split.pool_indices[shard] for w, shard in enumerate(shards)})
        self.shards = shards
        self.owner = np.full(len(ctx.pool), -1, dtype=np.int64)  # pool position -> worker
        for worker, shard in enumerate(shards):
            self.owner[shard] = worker
        self.oracle = Oracle(ctx.pool.labels, revealed=np.empty(0, dtype=np.int64) if initial is None else initial)
        self.requests: list[tuple[int, np.ndarray]] = []  # (worker, positions) in arrival order
        # labels after each request: arrived_labels[n] for the first n requests (the starting set included)
        self.arrived_labels = [len(self.oracle.labelled)]
        self.wall_seconds: list[float] = []
        for worker, positions in arrived:
            self._reveal(worker, positions, 0.0)
        self.trainings = list(trainings)

    # ------------------------------------------------------------------ what the other parties hold
    def worker_data(self, worker: int) -> tuple[np.ndarray, Split, Split]:
        """A worker's shard (pool positions), its images (labels only for oracle strategies, like a central
        pool), and the validation set (FK strategies; workers sit on the organisation's side)."""
        shard = self.shards[worker]
        pool = self.ctx.pool
        images = Split(images=take(pool.images, shard), labels=pool.labels[torch.from_numpy(shard)])
        return shard, images, self.ctx.validation

    def test_split(self) -> Split:
        return self.ctx.test

    # ------------------------------------------------------------------ labels
    def obtained(self, worker: int, count: int | None = None) -> list[np.ndarray] | None:
        """The pool positions of `worker`'s first `count` answered requests (all with None), one array per
        request; None while fewer have arrived."""
        mine = [positions for owner, positions in self.requests if owner == worker]
        if count is None:
            return mine
        return mine[:count] if len(mine) >= count else None

    def reveal(self, query: dict, result: tuple[np.ndarray, float, dict]) -> int:
        """Labels for a worker's answered request (`result`: its positions, seconds, strategy notes): refused
        for an image already labelled or outside the worker's shard; logged to queries.jsonl. Returns the
        labelled count."""
        positions, seconds, notes = result
        self._reveal(query["worker"], positions, seconds)
        line = {**self.fields, **query, "wall_seconds": round(seconds, 4), "labelled": self.arrived_labels[-1],
                "indices": self.ctx.split.pool_indices[positions].tolist(), **notes}
        storage.append_jsonl(self.folder / "queries.jsonl", line)
        return self.arrived_labels[-1]

    def _reveal(self, worker: int, positions: np.ndarray, seconds: float) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self.owner)
                               or (self.owner[positions] != worker).any()):
            raise LabelRequestError(f"worker {worker} asked for images outside its shard")
        self.oracle.reveal(positions)  # refuses an image already labelled
        self.requests.append((worker, positions))
        self.arrived_labels.append(self.arrived_labels[-1] + len(positions))
        self.wall_seconds.append(seconds)

    def training_set(self, requests: int, validation: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of the first `requests` answered requests (+ the validation set)."""
        return loop.training_set(self.ctx.pool, self.oracle, self.ctx.validation if validation else None,
                                 count=self.arrived_labels[requests])

    # ------------------------------------------------------------------ trainings
    def record_training(self, training: dict, summary: dict, state: dict) -> dict:
        """Write a published model: the labels new since the last training, the weights, the metrics line."""
        number, requests = training["model_version"], training["queries"]
        earlier = self.trainings[-1]["queries"] if self.trainings else 0
        if number != len(self.trainings) + 1:
            raise RuntimeError(f"training {number} published after {len(self.trainings)} trainings")
        new = self.oracle.labelled[self.arrived_labels[earlier]: self.arrived_labels[requests]]
        loop.save_acquired(self.folder, number - 1, self.ctx.split.pool_indices[new])
        acquire_seconds = sum(self.wall_seconds[earlier:requests])
        record = {**run_record(self.ctx, self.settings.recorded(), number - 1, self.arrived_labels[requests],
                               self.validation_labels, summary["report"], acquire_seconds, summary["train_seconds"]),
                  **self.fields, **training}
        spec = self.ctx.spec
        model = spec.model(spec.num_classes, False)
        model.load_state_dict(state)
        loop.save_iteration(self.folder, number - 1, [model], record, KEEP_EVERY_CHECKPOINT)
        self.trainings.append(record)
        return record


class Worker:
    """Selects `size` images of its shard with its strategy and the model version it is given."""

    def __init__(self, worker: int, strategy: str, dataset: str, store, options: AcquisitionOptions, seed: int,
                 scratch: Path, threads: int = 1, trained_before: bool = False) -> None:
        """`trained_before`: the initial model was trained on a starting set (uncertainty is then read at once)."""
        set_cpu_threads(threads)
        self.worker, self.name, self.seed, self.store = worker, strategy, seed, store
        self.trained_before = trained_before
        self.spec, self.strategy, self.options = DATASETS.get(dataset), STRATEGIES.get(strategy), options
        self.shard, self.pool, self.validation = ask(store, "worker_data", worker)  # pool positions, images
        self.obtained: list[np.ndarray] = list(ask(store, "obtained", worker, None))  # pool positions per request
        self.model = self.spec.model(self.spec.num_classes, self.strategy.mc_dropout)
        self.version: int | None = None
        self.scratch = scratch / f"worker{worker}"

    def query(self, index: int, version: int, state: dict, size: int, sleep: float = 0.0,
              ) -> tuple[np.ndarray, float, dict]:
        """Request `index`: pool positions of `size` unlabelled images of the shard, the seconds it took
        (with `sleep`, a real annotator delay), and what the strategy noted."""
        began = time.perf_counter()
        self._catch_up(index)
        if version != self.version:
            self.model.load_state_dict(state)
            self.version = version
        taken = np.concatenate(self.obtained) if self.obtained else np.empty(0, dtype=np.int64)
        unlabelled = np.flatnonzero(~np.isin(self.shard, taken))  # positions into the shard, sorted
        acquisition = AcquisitionState(
            models=[self.model], to_input=self.spec.normalise, pool=self.pool, unlabelled=unlabelled,
            validation=self.validation, iteration=version, budget=size,
            rng=numpy_rng(self.seed, "query", self.worker, index),
            seed=torch_seed(self.seed, "query", self.worker, index), options=self.options, scratch=self.scratch,
            trained_before=self.trained_before,
        )
        chosen, _ = loop.acquire(self.strategy, acquisition, self.name)
        positions = self.shard[chosen]
        self.obtained.append(positions)
        if sleep > 0:
            time.sleep(sleep)
        return positions, time.perf_counter() - began, acquisition.notes

    def _catch_up(self, index: int) -> None:
        """Know the labels of this worker's first `index` requests: after a restart, from the label store."""
        if len(self.obtained) == index:
            return
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while (earlier := ask(self.store, "obtained", self.worker, index)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.worker}: the label store never held its first {index} requests")
            time.sleep(0.05)
        self.obtained = list(earlier)


class Server:
    """Trains the model on the labelled set from a published version and tests it."""

    def __init__(self, server: int, dataset: str, store, schedule: Schedule, device: torch.device,
                 minority_classes: tuple[int, ...], mc_dropout: bool, seed: int, threads: int = 1) -> None:
        set_cpu_threads(threads)
        self.server, self.spec, self.schedule = server, DATASETS.get(dataset), schedule
        self.test = ask(store, "test_split")
        self.device, self.minority, self.mc_dropout, self.seed = device, minority_classes, mc_dropout, seed

    def train(self, number: int, base: dict, labelled: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict, dict]:
        """Training `number`: warm start from `base`, fresh optimiser (common.loop.fit), then the test report.
        Returns the new weights (shared through Ray's object store) and a summary for the label store."""
        spec = self.spec
        model = spec.model(spec.num_classes, self.mc_dropout)
        model.load_state_dict(base)
        images, labels = labelled
        seconds = loop.fit([model], images, labels, self.schedule, spec.normalise,
                           [torch_seed(self.seed, "train", number)], self.device, description=f"train v{number}")
        report = loop.evaluate([model], self.test, spec.normalise, self.device, spec.num_classes, self.minority)
        state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
        return state, {"report": report, "train_seconds": round(seconds, 4), "server": self.server}

