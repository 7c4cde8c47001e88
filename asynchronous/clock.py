"""When each label request is sent and answered, when each server trains, and which model each uses
(Huang et al., "Asynchronous Active Learning with Distributed Label Querying", IJCAI 2021).

`Coordinator` holds the rules, whatever the clock: a worker asks for `query_batch` labels of its
shard; a training is due each time the labelled set has grown by `threshold`; server (k-1) mod S
takes training k when it is free (round-robin), after training k-1 has started, on the labels that
have arrived by then, from the newest published model; a request uses the newest model published
when it is sent. An asynchronous worker asks again once its labels have arrived AND a model newer than
the one its last request used is published (AAL's workers block on the model version), so it makes at
most one request per model version, the initial model included (AAL's PyTorch code). Only if that rule
would stall the clock (nothing in flight, no training running or due: a --train-threshold above
query batch x workers, or shards that ran dry) may idle workers ask again with the same model.
Synchronous workers (AAL's baseline) ask together in rounds, and a round starts only when every
request of the last one was answered and every due training was published. The run stops when training `trainings` is
published; the label budget is trainings x threshold.

`simulate` runs the rules on a seeded clock: the annotator latency of request j of worker w is drawn
from its own stream (uniform on the latency range), a training takes `train_time` simulated seconds
per image it trains on (the starting set included). Nothing here depends on what the models select, so
the whole timeline, and with it every result, is the same for a seed whatever the order in which Ray finishes the work. Events at
one instant are applied in a fixed order: publications, then arrivals (by worker), then training
starts, then new requests (by worker).
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from common.naming import imbalance_name
from common.seeding import numpy_rng

ASSIGNMENTS = ("DA", "RA")  # every worker one strategy / worker w the strategy w mod len(list)
SPLITS = ("RS", "DS")  # random equal shards / k-means clusters of the initial model's features
LATENCY_MODES = ("simulated", "real")
# A training's simulated duration per labelled image: what AAL's synchronous query times imply (their
# 740-1340 s minus about 55 s of waiting for the slowest annotator, over 8-23k labels), not LeNet's speed.
TRAIN_TIME = 0.07


@dataclass(frozen=True)
class Asynchrony:
    """What fixes an asynchronous run's timeline (its flags), and its folder name."""

    workers: int
    servers: int = 1
    assignment: str = "DA"
    split: str = "RS"
    query_batch: int = 10
    threshold: int = 100  # labels between trainings (AAL: query_batch x workers)
    trainings: int = 6
    sync: bool = False
    latency: tuple[float, float] = (0.0, 60.0)  # seconds, uniform
    latency_mode: str = "simulated"
    train_time: float = TRAIN_TIME  # simulated seconds per labelled image

    @property
    def budget(self) -> int:
        """Labels the run acquires: the last training is due when they have all arrived."""
        return self.trainings * self.threshold

    def name(self) -> str:
        """The protocol folder part (common.experiment.protocol_variant adds "async-"). Strategies, --sync
        and --trainings name the method folder or are checked on resume instead."""
        low, high = (imbalance_name(value) for value in self.latency)
        parts = [f"w{self.workers}", f"s{self.servers}", self.assignment, self.split, f"b{self.query_batch}",
                 f"t{self.threshold}", f"l{low}-{high}", f"tt{imbalance_name(self.train_time)}"]
        return "-".join(parts + (["real"] if self.latency_mode == "real" else []))


@dataclass(frozen=True)
class Query:
    """One label request: worker `worker`'s request number `index`, of `size` images."""

    worker: int
    index: int
    size: int
    version: int  # the model version it selects with
    ready: float  # when the worker was ready to ask (its previous labels arrived, or the start)
    issued: float  # when it asked; ready < issued only in synchronous rounds
    latency: float  # the annotator's delay drawn for it


@dataclass(frozen=True)
class Training:
    """Training `number` (it publishes model version `number`) on the first `queries` requests that arrived."""

    number: int
    server: int
    due: float
    started: float
    base_version: int  # the model it starts from (warm start)
    queries: int
    labelled: int


def latency(seed: int, low_high: tuple[float, float], worker: int, index: int) -> float:
    """The annotator delay of request `index` of `worker`: its own seeded draw, however the run went."""
    low, high = low_high
    return float(numpy_rng(seed, "latency", worker, index).uniform(low, high)) if high > low else float(low)


class Coordinator:
    """The rules of asynchronous (or synchronous) querying and training, fed with the clock's events."""

    def __init__(self, timing: Asynchrony, shard_sizes: list[int], seed: int) -> None:
        self.timing, self.seed = timing, seed
        self.remaining = list(shard_sizes)  # unlabelled images left in each worker's shard
        self.next_index = [0] * timing.workers
        self.last_version = [-1] * timing.workers  # the model version of each worker's last request
        self.ready_at = [0.0] * timing.workers
        self.in_flight: dict[int, Query] = {}  # by worker
        self.asked = 0  # labels requested so far (arrived or in flight)
        self.labelled = 0
        self.arrived = 0  # requests answered
        self.due: list[float] = []  # due time of trainings 1, 2, ...
        self.started: list[Training] = []
        self.published: set[int] = set()
        self.busy_servers: set[int] = set()

    @property
    def newest(self) -> int:
        return max(self.published, default=0)

    @property
    def finished(self) -> bool:
        return len(self.published) >= self.timing.trainings

    def restore(self, requests: list[tuple[int, int]], trainings: int) -> None:
        """Continue a run from its files: the (worker, size) of every request that arrived, in order, and
        the number of published trainings (real latency: the clock restarts at 0)."""
        for worker, size in requests:
            self.last_version[worker] = trainings  # a resumed worker waits for the next model (real latency)
            self.remaining[worker] -= size
            self.next_index[worker] += 1
            self.asked += size
            self.labelled += size
            self.arrived += 1
        self.due = [0.0] * trainings
        self.started = [Training(k, (k - 1) % self.timing.servers, 0.0, 0.0, k - 1, 0, 0) for k in range(1, trainings + 1)]
        self.published = set(range(1, trainings + 1))
        self._note_due(0.0)

    def on_arrival(self, query: Query, now: float) -> None:
        """The labels of `query` arrived at `now`."""
        del self.in_flight[query.worker]
        self.labelled += query.size
        self.arrived += 1
        self.ready_at[query.worker] = now
        self._note_due(now)

    def on_publication(self, training: Training) -> None:
        self.published.add(training.number)
        self.busy_servers.discard(training.server)

    def _note_due(self, now: float) -> None:
        while len(self.due) < self.timing.trainings and self.labelled >= (len(self.due) + 1) * self.timing.threshold:
            self.due.append(now)

    def trainings_to_start(self, now: float) -> list[Training]:
        """Due trainings whose server is free, in order (training k never starts before training k-1)."""
        starting = []
        while len(self.started) < len(self.due):
            number = len(self.started) + 1
            server = (number - 1) % self.timing.servers
            if server in self.busy_servers:
                break
            training = Training(number=number, server=server, due=self.due[number - 1], started=now,
                                base_version=self.newest, queries=self.arrived, labelled=self.labelled)
            self.started.append(training)
            self.busy_servers.add(server)
            starting.append(training)
        return starting

    def queries_to_issue(self, now: float) -> list[Query]:
        """Requests sent at `now`: every idle worker (asynchronous), or a whole round once the last round
        was answered and its training published (synchronous)."""
        if self.finished:
            return []
        if self.timing.sync and (self.in_flight or len(self.published) < len(self.due)):
            return []
        stalled = not self.in_flight and len(self.published) == len(self.started) == len(self.due)
        issued = []
        for worker in range(self.timing.workers):
            size = min(self.timing.query_batch, self.remaining[worker], self.timing.budget - self.asked)
            waiting = not self.timing.sync and self.last_version[worker] >= self.newest and not stalled
            if worker in self.in_flight or size <= 0 or waiting:
                continue
            self.last_version[worker] = self.newest
            query = Query(worker=worker, index=self.next_index[worker], size=size, version=self.newest,
                          ready=self.ready_at[worker], issued=now,
                          latency=latency(self.seed, self.timing.latency, worker, self.next_index[worker]))
            self.in_flight[worker] = query
            self.next_index[worker] += 1
            self.remaining[worker] -= size
            self.asked += size
            issued.append(query)
        return issued


# Event kinds, in the order they are applied at one instant (publications and arrivals are queued).
PUBLISH, ARRIVE, TRAIN, ASK = "publish", "arrive", "train", "ask"


def simulate(timing: Asynchrony, shard_sizes: list[int], seed: int, initial_labels: int = 0,
             ) -> Iterator[tuple[str, Query | Training, float]]:
    """The run's events on the simulated clock, in order: (kind, query or training, simulated time). A training
    lasts `timing.train_time` per image it trains on: the starting set's `initial_labels` and those that arrived."""
    coordinator = Coordinator(timing, shard_sizes, seed)
    queue: list[tuple[float, int, int, int, Query | Training]] = []  # (time, kind rank, worker/number, seq, item)
    sequence = itertools.count()
    now = 0.0
    while not coordinator.finished:
        if queue and queue[0][0] <= now:
            time, rank, _, _, item = heapq.heappop(queue)
            if rank == 0:
                coordinator.on_publication(item)
                yield PUBLISH, item, time
            else:
                coordinator.on_arrival(item, time)
                yield ARRIVE, item, time
            continue
        starting = coordinator.trainings_to_start(now)
        for training in starting:
            yield TRAIN, training, now
            duration = timing.train_time * (initial_labels + training.labelled)
            heapq.heappush(queue, (now + duration, 0, training.number, next(sequence), training))
        if starting:
            continue
        issued = coordinator.queries_to_issue(now)
        for query in issued:
            yield ASK, query, now
            heapq.heappush(queue, (now + query.latency, 1, query.worker, next(sequence), query))
        if issued:
            continue
        if not queue:
            raise RuntimeError(f"the clock stopped before training {timing.trainings}: "
                               f"{coordinator.labelled} labels arrived, budget {timing.budget}")
        now = queue[0][0]
