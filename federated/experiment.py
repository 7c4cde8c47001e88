"""run.py's federated mode (`--clients` > 1): its flags, and the jobs it hands to Flower's simulation."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

from common.cli import fraction, positive_float, positive_int
from common.errors import UserError
from common.experiment import Protocol
from common.partition import PARTITIONS
from federated.strategies import AGGREGATIONS, CLIENT_METHODS
from federated.task import Federation, Job, client_pools

LOCAL_LOSSES = ("ce", "kcfu")


@dataclass(frozen=True)
class FederatedFlags:
    """The federated flags of a run.py command (their defaults are the parser's)."""

    clients: int = 1
    partition: str = "dirichlet"
    alpha: float = 0.1
    classes_per_client: int = 2
    min_client_size: int = 10
    rounds: int = 5
    local_epochs: int = 2
    fed_algo: str = "fedavg"
    proximal_mu: float = 0.01
    local_loss: str = "ce"
    reinit_each_cycle: bool = False
    participation: float = 1.0
    client_timeout: float = 600.0

    @property
    def enabled(self) -> bool:
        return self.clients > 1

    def federation(self) -> Federation:
        return Federation(
            clients=self.clients, partition=self.partition, alpha=self.alpha, min_client_size=self.min_client_size,
            classes_per_client=self.classes_per_client, fed_algo=self.fed_algo, rounds=self.rounds,
            local_epochs=self.local_epochs, local_loss=self.local_loss, proximal_mu=self.proximal_mu,
            reinit_each_cycle=self.reinit_each_cycle, participation=self.participation,
        )


# The flags only a federated run uses (run.py refuses them, given explicitly, in another mode).
FLAGS = tuple(f.name for f in fields(FederatedFlags) if f.name != "clients")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default = FederatedFlags()
    group = parser.add_argument_group("federated active learning (--clients > 1; docs/federated.md)")
    group.add_argument("--clients", type=positive_int, default=default.clients,
                       help="clients holding the pool; more than 1 runs federated AL in Flower's simulation")
    group.add_argument("--partition", choices=PARTITIONS.names(), default=default.partition,
                       help="how the pool is spread over the clients (label skew)")
    group.add_argument("--alpha", type=positive_float, default=default.alpha,
                       help="Dirichlet concentration of dirichlet / dirichlet-equal (small: few classes per client)")
    group.add_argument("--classes-per-client", type=positive_int, default=default.classes_per_client,
                       help="pathological: classes per client")
    group.add_argument("--min-client-size", type=positive_int, default=default.min_client_size,
                       help="dirichlet: smallest client pool")
    group.add_argument("--rounds", type=positive_int, default=default.rounds, help="communication rounds per AL cycle")
    group.add_argument("--local-epochs", type=positive_int, default=default.local_epochs,
                       help="client training epochs per round")
    group.add_argument("--fed-algo", choices=AGGREGATIONS.names(), default=default.fed_algo,
                       help="aggregation (fedbn keeps batch-norm layers local to each client)")
    group.add_argument("--proximal-mu", type=positive_float, default=default.proximal_mu,
                       help="fedprox: weight of the proximal term")
    group.add_argument("--local-loss", choices=LOCAL_LOSSES, default=default.local_loss,
                       help="client loss: cross-entropy, or KAFAL's KCFU (balanced softmax + compensatory distillation)")
    group.add_argument("--reinit-each-cycle", action="store_true",
                       help="the global model restarts from the run's initial weights at every cycle's training (as "
                            "KAFAL and LoGo do); the acquisition still uses the last cycle's model")
    group.add_argument("--participation", type=fraction, default=default.participation,
                       help="fraction of the clients sampled (seeded) for each round; the cycle's last round takes "
                            "every client (KAFAL: 0.8)")
    group.add_argument("--client-timeout", type=positive_float, default=default.client_timeout,
                       help="seconds a round or query waits for the clients (late clients are skipped)")


def check_methods(methods: list[str]) -> None:
    for method in methods:
        CLIENT_METHODS.get(method)  # unknown: one line listing the federated methods


def federated_protocol(protocol: Protocol, fed: Federation) -> Protocol:
    return replace(protocol, federation=fed.name())


def check_partition(pool_labels, num_classes: int, fed: Federation, seed: int, budget: int) -> None:
    """Fail before any simulation starts when the clients cannot be formed or cannot fill a cycle."""
    parts = client_pools(pool_labels, num_classes, fed, seed)
    if sum(map(len, parts)) < budget:
        raise UserError(f"the {fed.clients} clients hold {sum(map(len, parts))} images, fewer than --budget {budget}")


def make_jobs(protocols: list[tuple[int, Protocol]], fed: Federation, unsupervised: list[int], methods: list[str],
              **common) -> list[Job]:
    """One job per (run, initial model, method), in that order."""
    return [
        Job(protocol=protocol, run=run, federation=fed, method=method, unsupervised=start, **common)
        for run, protocol in protocols for start in unsupervised for method in methods
    ]
