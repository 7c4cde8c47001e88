"""What a federated AL run is, and the data each party holds (the Flower quickstart's task module).

A `Job` describes one method's federated run completely and travels as JSON inside every
message, so a client needs nothing but its partition id to find its own pool: it recomputes
the run's split (common.experiment.draw_split) and the seeded client partition
(common.partition). The server holds the validation and test sets; a client holds its pool
images and learns only the labels of the images it acquires (its `Oracle`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

import datasets_available  # noqa: F401  (registers every dataset, also inside Flower's client processes)
from common.datasets import DATASETS, DatasetSpec, Split
from common.experiment import Protocol, draw_split
from common.naming import imbalance_name, run_folder, run_label
from common.images import take
from common.partition import PartitionOptions, partition
from common.schedule import Schedule
from common.seeding import numpy_rng


@dataclass(frozen=True)
class Federation:
    """How the pool is spread over clients and how they train together."""

    clients: int
    partition: str = "dirichlet"  # common.partition.PARTITIONS
    alpha: float = 0.1
    min_client_size: int = 10
    classes_per_client: int = 2
    fed_algo: str = "fedavg"  # federated.strategies.AGGREGATIONS
    rounds: int = 2
    local_epochs: int = 1
    local_loss: str = "ce"  # ce | kcfu
    proximal_mu: float = 0.01  # fedprox
    reinit_each_cycle: bool = False  # the global model restarts from the run's initial weights every cycle
    participation: float = 1.0  # fraction of the clients sampled (seeded) per round; the last round takes all

    def name(self) -> str:
        """The folder and plot name of this federation (what makes its runs comparable)."""
        shape = {"dirichlet": f"a{imbalance_name(self.alpha)}", "dirichlet-equal": f"a{imbalance_name(self.alpha)}",
                 "pathological": f"k{self.classes_per_client}", "iid": ""}[self.partition]
        algo = self.fed_algo + (f"{imbalance_name(self.proximal_mu)}" if self.fed_algo == "fedprox" else "")
        return "-".join(part for part in (
            f"c{self.clients}", self.partition, shape, algo, f"r{self.rounds}", f"e{self.local_epochs}",
            f"p{imbalance_name(self.participation)}" if self.participation < 1 else "",
            "reinit" if self.reinit_each_cycle else "") if part)

    def sampled(self, seed: int, cycle: int, server_round: int) -> list[int]:
        """The partitions training in `server_round` of `cycle`: a seeded ceil(participation x clients) of
        them, every one in the cycle's last round (KAFAL's code: the local models KSAS reads are fresh)."""
        count = math.ceil(self.participation * self.clients - 1e-9)
        if count >= self.clients or server_round >= self.rounds:
            return list(range(self.clients))
        rng = numpy_rng(seed, "participation", cycle, server_round)
        return sorted(rng.choice(self.clients, size=max(1, count), replace=False).tolist())

    def partition_options(self) -> PartitionOptions:
        return PartitionOptions(alpha=self.alpha, min_size=self.min_client_size,
                                classes_per_client=self.classes_per_client)


@dataclass(frozen=True)
class Job:
    """One method's federated run: everything the server and every client need, JSON-serialisable."""

    dataset: str
    data_root: str | None
    protocol: Protocol
    run: int
    federation: Federation
    method: str
    unsupervised: int
    budget: int
    cycles: int
    schedule: Schedule  # the dataset's local-training schedule (epochs = federation.local_epochs)
    descriptor_layers: tuple[str, ...]
    top_k: int
    batch_size: int
    device: str = "cpu"
    client_timeout: float = 600.0  # seconds a round waits for the clients' replies
    fail_client: tuple[int, ...] = ()  # testing: (partition id or -1 for all, cycle, round) where it raises (0: query)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "Job":
        raw = json.loads(text)
        return Job(
            **{**raw, "protocol": _protocol(raw["protocol"]),
               "federation": Federation(**raw["federation"]), "schedule": _schedule(raw["schedule"]),
               "descriptor_layers": tuple(raw["descriptor_layers"]), "fail_client": tuple(raw["fail_client"])},
        )

    @property
    def spec(self) -> DatasetSpec:
        return DATASETS.get(self.dataset)

    @property
    def label(self) -> str:
        """The method run's folder and curve name (common.naming.run_label)."""
        return run_label(self.method, local_loss=self.federation.local_loss)

    def method_folder(self, out: Path) -> Path:
        """Where the run's files live under `out`."""
        protocol = self.protocol
        return (run_folder(out, self.dataset, protocol.imbalance, protocol.val_per_class, self.run, protocol.variant)
                / f"unsup{self.unsupervised}" / self.label)

    @property
    def local_schedule(self) -> Schedule:
        return self.schedule.with_epochs(self.federation.local_epochs)


def _schedule(raw: dict) -> Schedule:
    return Schedule(**{**raw, "milestones": tuple(raw["milestones"])})


def _protocol(raw: dict) -> Protocol:
    return Protocol(**{**raw, "minority_classes": tuple(raw["minority_classes"])})


def client_pools(pool_labels: np.ndarray, num_classes: int, federation: Federation, seed: int) -> list[np.ndarray]:
    """Pool positions of each client (sorted, disjoint), a seeded function of the run."""
    return partition(federation.partition, pool_labels, num_classes, federation.clients,
                     numpy_rng(seed, "partition"), federation.partition_options())


@dataclass(frozen=True)
class ClientData:
    """What one client holds: its pool images and (behind its Oracle only) their labels."""

    partition_id: int
    pool: Split  # local images; labels are read through an Oracle, never directly
    pool_positions: np.ndarray  # [n] positions of these images in the run's pool (the server's view of ids)


@lru_cache(maxsize=4)
def _train_split(dataset: str, data_root: str | None) -> Split:
    return DATASETS.get(dataset).load(Path(data_root) if data_root else None, True)


@lru_cache(maxsize=16)
def _client_positions(dataset: str, data_root: str | None, protocol_json: str, federation_json: str,
                      ) -> tuple[np.ndarray, list[np.ndarray]]:
    """The run's pool (train-split ids) and every client's positions in it."""
    spec, protocol = DATASETS.get(dataset), _protocol(json.loads(protocol_json))
    labels = _train_split(dataset, data_root).labels.numpy()
    split = draw_split(spec, labels, protocol)
    federation = Federation(**json.loads(federation_json))
    return split.pool_indices, client_pools(labels[split.pool_indices], spec.num_classes, federation, protocol.seed)


def client_data(job: Job, partition_id: int) -> ClientData:
    """The client's own pool, recomputed from the job (cached per process: Flower reuses its workers)."""
    if not 0 <= partition_id < job.federation.clients:
        raise ValueError(f"partition id {partition_id} outside 0..{job.federation.clients - 1}")
    pool_indices, parts = _client_positions(job.dataset, job.data_root, json.dumps(asdict(job.protocol), sort_keys=True),
                                            json.dumps(asdict(job.federation), sort_keys=True))
    positions = parts[partition_id]
    train = _train_split(job.dataset, job.data_root)
    ids = torch.from_numpy(pool_indices[positions])
    return ClientData(partition_id=partition_id, pool=Split(images=take(train.images, ids.numpy()),
                                                             labels=train.labels[ids]),
                      pool_positions=positions)


def array_record(arrays: dict[str, np.ndarray]):
    """Named numpy arrays (FK centres) as a message record (flwr.app.ArrayRecord)."""
    from flwr.app import Array, ArrayRecord  # noqa: PLC0415  (Flower loads only for federated runs)

    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def numpy_arrays(record) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}
