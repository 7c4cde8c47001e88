"""run.py's federated mode (`--clients` > 1): its flags, and the jobs it hands to Flower's simulation."""
from __future__ import annotations

import argparse
from dataclasses import replace

from common.cli import fraction, positive_float, positive_int
from common.errors import UserError
from common.experiment import Protocol
from common.partition import PARTITIONS
from federated.strategies import AGGREGATIONS, CLIENT_METHODS
from federated.task import Federation, Job, client_pools

LOCAL_LOSSES = ("ce", "kcfu")
# The flags only a federated run uses (run.py refuses them, given explicitly, in another mode).
FLAGS = ("partition", "alpha", "classes_per_client", "min_client_size", "rounds", "local_epochs", "fed_algo",
         "proximal_mu", "local_loss", "client_timeout", "reinit_each_cycle", "participation")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("federated active learning (--clients > 1; docs/federated.md)")
    group.add_argument("--clients", type=positive_int, default=1,
                       help="clients holding the pool; more than 1 runs federated AL in Flower's simulation")
    group.add_argument("--partition", choices=PARTITIONS.names(), default="dirichlet",
                       help="how the pool is spread over the clients (label skew)")
    group.add_argument("--alpha", type=positive_float, default=0.1,
                       help="Dirichlet concentration of dirichlet / dirichlet-equal (small: few classes per client)")
    group.add_argument("--classes-per-client", type=positive_int, default=2, help="pathological: classes per client")
    group.add_argument("--min-client-size", type=positive_int, default=10, help="dirichlet: smallest client pool")
    group.add_argument("--rounds", type=positive_int, default=5, help="communication rounds per AL cycle")
    group.add_argument("--local-epochs", type=positive_int, default=2, help="client training epochs per round")
    group.add_argument("--fed-algo", choices=AGGREGATIONS.names(), default="fedavg",
                       help="aggregation (fedbn keeps batch-norm layers local to each client)")
    group.add_argument("--proximal-mu", type=positive_float, default=0.01, help="fedprox: weight of the proximal term")
    group.add_argument("--local-loss", choices=LOCAL_LOSSES, default="ce",
                       help="client loss: cross-entropy, or KAFAL's KCFU (balanced softmax + compensatory distillation)")
    group.add_argument("--reinit-each-cycle", action="store_true",
                       help="the global model restarts from the run's initial weights at every cycle's training (as "
                            "KAFAL and LoGo do); the acquisition still uses the last cycle's model")
    group.add_argument("--participation", type=fraction, default=1.0,
                       help="fraction of the clients sampled (seeded) for each round; the cycle's last round takes "
                            "every client (KAFAL: 0.8)")
    group.add_argument("--client-timeout", type=positive_float, default=600.0,
                       help="seconds a round or query waits for the clients (late clients are skipped)")


def federation(args: argparse.Namespace) -> Federation:
    return Federation(
        clients=args.clients, partition=args.partition, alpha=args.alpha, min_client_size=args.min_client_size,
        classes_per_client=args.classes_per_client, fed_algo=args.fed_algo, rounds=args.rounds,
        local_epochs=args.local_epochs, local_loss=args.local_loss, proximal_mu=args.proximal_mu,
        reinit_each_cycle=args.reinit_each_cycle, participation=args.participation,
    )


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


def make_jobs(args: argparse.Namespace, protocols: list[tuple[int, Protocol]], fed: Federation, **common) -> list[Job]:
    """One job per (run, initial model, method), in that order."""
    return [
        Job(protocol=protocol, run=run, federation=fed, method=method, unsupervised=unsupervised, **common)
        for run, protocol in protocols for unsupervised in args.unsupervised for method in args.methods
    ]
