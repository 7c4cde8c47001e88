"""Federated strategies of both kinds: how the server aggregates (Flower's strategies, with replies
ordered by client so the same seed gives the same weights) and how a client acquires its share.

Client acquisition reuses the central strategies (common/strategies) wherever the method exists
there; KAFAL's KSAS and LoGo are Strategy subclasses over the scores in federated/kafal.py and
federated/logo.py. FK methods are merged by the server (federated/fk.py) and only flagged here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from common.registry import Registry
from common.strategies import STRATEGIES, AcquisitionState, Strategy
from common.strategies.base import RandomStrategy, ScoreStrategy
from common.strategies.diversity import gradient_embedding_factors
from common.strategies.uncertainty import entropy
from common.train import predict_logits, predict_probabilities
from federated.kafal import ksas_scores
from federated.logo import logo_select, predicted_class_embeddings

LOG = logging.getLogger("fkal.federated")


def partition_of(reply) -> int:
    """The partition id a client put in its reply (-1 for an error reply, which carries no content)."""
    if reply.has_error():
        return -1
    for record in reply.content.metric_records.values():
        if "partition-id" in record:
            return int(record["partition-id"])
    return -1


class RoundFailed(Exception):
    """A training round that no client answered (nothing to aggregate)."""

    def __init__(self, server_round: int, missing: list[int]) -> None:
        super().__init__(f"round {server_round}: no client answered")
        self.server_round, self.missing = server_round, missing


def ordered(base: type) -> type:
    """`base` (a Flower strategy) aggregating replies in partition order, so float sums never depend
    on which client answered first; failed clients are logged, the partitions missing from each round
    kept in `missing` (a round with none raises RoundFailed), and the last round's per-client weights in
    `client_arrays` (KSAS and LoGo query each client's local model)."""

    class Ordered(base):
        def configure_train(self, server_round, arrays, config, grid):
            """Train messages to the partitions `sampled(server_round)` names (all, by default)."""
            chosen = {self.nodes[c] for c in self.sampled(server_round)}
            return [m for m in super().configure_train(server_round, arrays, config, grid)
                    if m.metadata.dst_node_id in chosen]

        def aggregate_train(self, server_round, replies):
            replies = sorted(replies, key=lambda reply: (partition_of(reply), reply.metadata.src_node_id))
            for reply in replies:
                if reply.has_error():
                    LOG.warning("round %d: client node %d failed: %s", server_round, reply.metadata.src_node_id,
                                reply.error.reason)
            answered = {partition_of(r) for r in replies if not r.has_error()}
            self.missing[server_round] = [c for c in self.sampled(server_round) if c not in answered]
            if not answered:
                raise RoundFailed(server_round, self.missing[server_round])
            self.client_arrays = {partition_of(r): r.content["arrays"] for r in replies if not r.has_error()}
            return super().aggregate_train(server_round, replies)

    Ordered.__name__ = f"Ordered{base.__name__}"
    return Ordered


@dataclass(frozen=True)
class Aggregation:
    """A server aggregation: the name of Flower's strategy class (flwr.serverapp.strategy, imported only
    when a federated run starts), and whether batch-norm layers stay local to the clients (FedBN)."""

    flower_strategy: str
    local_batch_norm: bool = False
    options: Callable[[float], dict] = lambda _mu: {}


AGGREGATIONS: Registry[Aggregation] = Registry("federated aggregation (--fed-algo)")
AGGREGATIONS.register("fedavg", Aggregation("FedAvg"))
AGGREGATIONS.register("fedprox", Aggregation("FedProx", options=lambda mu: {"proximal_mu": mu}))
AGGREGATIONS.register("fedadam", Aggregation("FedAdam"))
AGGREGATIONS.register("fedyogi", Aggregation("FedYogi"))
AGGREGATIONS.register("fedbn", Aggregation("FedAvg", local_batch_norm=True))


def make_aggregation(name: str, nodes: dict[int, int], proximal_mu: float,
                     sampled: Callable[[int], list[int]] | None = None):
    """A fresh strategy object for one AL cycle (server optimiser state restarts each cycle, like the
    fresh SGD optimiser of every central iteration, so a resumed run equals an uninterrupted one), training
    in each round the partitions `sampled(round)` names (default: every client; `nodes`: partition ->
    node id)."""
    import flwr.serverapp.strategy as flower  # noqa: PLC0415

    aggregation = AGGREGATIONS.get(name)
    strategy = ordered(getattr(flower, aggregation.flower_strategy))(
        fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=len(nodes), min_evaluate_nodes=0,
        min_available_nodes=len(nodes), **aggregation.options(proximal_mu))
    strategy.nodes, strategy.missing = nodes, {}
    strategy.sampled = sampled or (lambda _round: sorted(nodes))
    return strategy


# ----------------------------------------------------------------------------- client acquisition

class KsasStrategy(ScoreStrategy):
    """KAFAL's KSAS (Cao et al., ICCV 2023): the symmetric KL between the client's local model and the
    global model, both specialised to the client's labelled class counts; random at the first cycle."""

    def __init__(self, local_model: nn.Module, counts: np.ndarray) -> None:
        self.local_model = local_model
        self.counts = torch.as_tensor(counts, dtype=torch.float64)

    def scores(self, state: AcquisitionState) -> np.ndarray:
        images, options = state.unlabelled_images(), state.options
        global_logits = predict_logits(state.models[0], images, state.to_input, options.device, options.batch_size)
        local_logits = predict_logits(self.local_model, images, state.to_input, options.device, options.batch_size)
        return ksas_scores(local_logits.double(), global_logits.double(), self.counts).numpy()


class LogoStrategy(Strategy):
    """LoGo (Kim et al., CVPR 2023): k-means (k = budget) on the gradient embeddings of the client's
    local-only model (federated.logo.local_only_model) for its predicted class, then per cluster the image
    the global model is least sure of; random while the client has no label to train that model on."""

    def __init__(self, local_only: nn.Module | None) -> None:
        self.local_only = local_only

    def select(self, state: AcquisitionState) -> np.ndarray:
        if self.local_only is None:
            return RandomStrategy().select(state)
        embeddings = predicted_class_embeddings(*gradient_embedding_factors(state, state.unlabelled, self.local_only))
        probs = predict_probabilities(state.models, state.unlabelled_images(), state.to_input, state.options.device,
                                      state.options.batch_size)
        rows = logo_select(embeddings, entropy(probs.numpy().astype(np.float64)), state.budget, state.rng)
        return state.unlabelled[rows]


@dataclass(frozen=True)
class ClientMethod:
    """How a client acquires for one federated method: a Strategy built from its own model and labelled
    class counts, or (server_merged) the federated FK exchange of federated/fk.py. Its own model is the
    client's last local update (uses_local_model: the server keeps and sends it), or a model trained from
    fresh weights on its labels alone at query time (trains_local_only; None while it has no label)."""

    build: Callable[[nn.Module | None, np.ndarray], Strategy] | None
    uses_local_model: bool = False
    trains_local_only: bool = False
    server_merged: bool = False  # FK: the server merges every client's candidates into the budget
    pseudo_label: str | None = None  # FK: the pool images' label for g (None: features only)


def _central(name: str) -> ClientMethod:
    return ClientMethod(build=lambda _local, _counts: STRATEGIES.get(name))


CLIENT_METHODS: Registry[ClientMethod] = Registry("federated method")
for _name in ("random", "entropy", "margin", "least-confidence"):
    CLIENT_METHODS.register(_name, _central(_name))
CLIENT_METHODS.register("ksas", ClientMethod(build=KsasStrategy, uses_local_model=True))
CLIENT_METHODS.register("logo", ClientMethod(build=lambda local_only, _counts: LogoStrategy(local_only),
                                             trains_local_only=True))
CLIENT_METHODS.register("fk-nn", ClientMethod(build=None, server_merged=True, pseudo_label="nn"))
CLIENT_METHODS.register("fk-features", ClientMethod(build=None, server_merged=True, pseudo_label=None))
