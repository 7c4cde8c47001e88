"""The Flower ClientApp: a client trains the global model on its labelled images and acquires its share.

Every message carries the run's `Job`; the client finds its own pool from its partition id
(`context.node_config["partition-id"]`, stable across runs, unlike Flower's node ids). Its
labelled set comes from the server in each message (the server persists it, so a resumed run
needs no client state); labels are read only through the client's Oracle (the annotator sits
with the client). Replies carry model weights, counts, local ids and similarities only
(federated/privacy.py checks every one on the server).
"""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from common import loop
from common.datasets import Split
from common.images import take
from common.oracle import Oracle
from common.seeding import numpy_rng, torch_seed
from common.strategies import AcquisitionOptions, AcquisitionState
from common.train import LossFunction, model_input, resolve_device
from federated import fk
from federated.kafal import balanced_softmax_ce, compensatory_loss, mix_unlabelled
from federated.logo import local_only_model
from federated.strategies import AGGREGATIONS, CLIENT_METHODS
from federated.task import ClientData, Job, client_data, numpy_arrays

app = ClientApp()


class InjectedFailure(RuntimeError):
    """Raised where a test asked this client to fail (Job.fail_client)."""


def _fail_if_asked(job: Job, client: ClientData, cycle: int, server_round: int) -> None:
    """Testing: raise where the job names this client (-1: every client), cycle and round (round 0: the query)."""
    if job.fail_client and job.fail_client[0] in (client.partition_id, -1) and \
            tuple(job.fail_client[1:]) == (cycle, server_round):
        raise InjectedFailure(f"client {client.partition_id} fails in cycle {cycle} round {server_round} (test)")


def _job_and_client(message: Message, context: Context) -> tuple[Job, ClientData, ConfigRecord]:
    config = message.content["config"]
    job = Job.from_json(str(config["job"]))
    if "data-root" in context.node_config:  # a deployed SuperNode names where its own dataset lives
        job = replace(job, data_root=str(context.node_config["data-root"]))
    torch.set_num_threads(int(job.extra.get("threads", 1)))
    return job, client_data(job, int(context.node_config["partition-id"])), config


def _model(job: Job, arrays: ArrayRecord) -> nn.Module:
    model = job.spec.model(job.spec.num_classes, False)
    model.load_state_dict(arrays.to_torch_state_dict())
    return model


def _batch_norm_names(model: nn.Module) -> list[str]:
    """State-dict entries of the model's batch-norm layers (what FedBN keeps local)."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            names += [f"{prefix}.{key}" for key in module.state_dict()]
    return names


def _labelled(config: ConfigRecord, partition_id: int) -> np.ndarray:
    return np.asarray(config.get(f"labelled-{partition_id}", []), dtype=np.int64)


def local_loss(job: Job, model: nn.Module, global_model: nn.Module, counts: np.ndarray, client: ClientData,
               unlabelled: np.ndarray, server_round: int, generator: torch.Generator, device: torch.device
               ) -> LossFunction:
    """The client's training loss: cross-entropy or KCFU's balanced softmax, plus KCFU's compensatory
    term from the second round of every cycle on (mixed-up unlabelled images, the global model of the
    round's start as teacher: KAFAL's reference starts it there, the first cycle included), plus
    FedProx's (mu/2)||w - w_global||^2 when aggregating with fedprox."""
    counts_tensor = torch.as_tensor(counts, dtype=torch.float32, device=device)
    kcfu = job.federation.local_loss == "kcfu"
    teacher = kcfu and server_round > 1 and len(unlabelled) > 1
    proximal = job.federation.fed_algo == "fedprox"
    anchors = [p.detach().clone().to(device) for p in global_model.parameters()] if proximal else []
    if teacher:
        global_model.to(device).eval()

    def loss(net: nn.Module, _x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        value = balanced_softmax_ce(logits, labels, counts_tensor) if kcfu else F.cross_entropy(logits, labels)
        if teacher:
            picks = torch.randint(len(unlabelled), (len(labels),), generator=generator).numpy()
            raw = take(client.pool.images, unlabelled[picks])
            mixed = mix_unlabelled(model_input(job.spec.normalise, raw, device), generator)
            with torch.no_grad():
                global_logits = global_model(mixed.inputs).float()
            value = value + compensatory_loss(net(mixed.inputs).float(), global_logits, counts_tensor, mixed)
        if proximal:
            value = value + job.federation.proximal_mu / 2 * sum(
                ((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchors))
        return value

    return loss


@app.train()
def train(message: Message, context: Context) -> Message:
    """Local training from the global weights on the client's labelled images."""
    job, client, config = _job_and_client(message, context)
    cycle, server_round = int(config["cycle"]), int(config["server-round"])
    _fail_if_asked(job, client, cycle, server_round)
    device = resolve_device(job.device)
    model = _model(job, message.content["arrays"])
    if AGGREGATIONS.get(job.federation.fed_algo).local_batch_norm and "batch-norm" in context.state:
        model.load_state_dict(context.state["batch-norm"].to_torch_state_dict(), strict=False)  # FedBN
    labelled = _labelled(config, client.partition_id)
    if len(labelled):
        oracle = Oracle(client.pool.labels, revealed=labelled)
        images, labels = loop.training_set(client.pool, oracle)
        seed = torch_seed(job.protocol.seed, "federated-train", cycle, server_round, client.partition_id)
        unlabelled = np.setdiff1d(np.arange(len(client.pool)), labelled)
        loss = local_loss(job, model, copy.deepcopy(model), oracle.counts(job.spec.num_classes), client, unlabelled,
                          server_round, torch.Generator().manual_seed(seed), device)
        loop.fit([model], images, labels, job.local_schedule, job.spec.normalise, [seed], device, loss=loss)
    model.cpu()
    if AGGREGATIONS.get(job.federation.fed_algo).local_batch_norm:
        state = model.state_dict()
        context.state["batch-norm"] = ArrayRecord({name: state[name] for name in _batch_norm_names(model)})
    metrics = MetricRecord({"num-examples": int(len(labelled)), "partition-id": client.partition_id})
    return Message(content=RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}),
                   reply_to=message)


def select_share(job: Job, client: ClientData, global_model: nn.Module, local_model: nn.Module, labelled: np.ndarray,
                 cycle: int, share: int, device: torch.device) -> np.ndarray:
    """`share` local ids to label next, by the job's method on this client's unlabelled images: the
    central strategy itself (common.loop.acquire) on the client's pool, or KSAS / LoGo."""
    if share == 0:
        return np.empty(0, dtype=np.int64)
    oracle = Oracle(client.pool.labels, revealed=labelled)
    counts = oracle.counts(job.spec.num_classes)
    method = CLIENT_METHODS.get(job.method)
    if method.trains_local_only:  # LoGo: a model of the client's own labels alone, never the federated weights
        images, labels = loop.training_set(client.pool, oracle)
        local_model = local_only_model(job.spec, images, labels, job.protocol.seed, cycle, client.partition_id,
                                       device) if len(labels) else None
    state = AcquisitionState(
        models=[global_model], to_input=job.spec.normalise, pool=client.pool,
        unlabelled=np.setdiff1d(np.arange(len(client.pool)), labelled),
        validation=Split(images=client.pool.images[:0], labels=client.pool.labels[:0]), iteration=cycle,
        budget=share, rng=numpy_rng(job.protocol.seed, "federated-acquire", cycle, client.partition_id),
        seed=torch_seed(job.protocol.seed, "federated-acquire", cycle, client.partition_id),
        options=AcquisitionOptions(device=device, feature_layer=job.spec.penultimate, batch_size=job.batch_size),
        trained_before=job.protocol.initial_labels > 0,  # the global model was trained on the starting set
    )
    return loop.acquire(method.build(local_model, counts), state, job.method)[0]


@app.query()
def query(message: Message, context: Context) -> Message:
    """Acquire this client's share with the global model (and its own local model for KSAS / LoGo), or
    for FK describe its unlabelled pool and return its best matches for the server's centres."""
    job, client, config = _job_and_client(message, context)
    cycle = int(config["cycle"])
    _fail_if_asked(job, client, cycle, 0)
    device = resolve_device(job.device)
    global_model = _model(job, message.content["arrays"])
    labelled = _labelled(config, client.partition_id)
    unlabelled = np.setdiff1d(np.arange(len(client.pool)), labelled)
    method = CLIENT_METHODS.get(job.method)
    reply = {"partition-id": client.partition_id}
    if method.server_merged:
        candidates = fk.client_candidates(
            global_model, take(client.pool.images, unlabelled), job.spec.normalise, job.descriptor_layers, device,
            fk.Centres.from_arrays(numpy_arrays(message.content["centres"])), int(config["top-k"]),
            method.pseudo_label, job.batch_size,
        )
        valid = candidates.ids >= 0
        reply["ids"] = np.where(valid, unlabelled[np.maximum(candidates.ids, 0)], -1).ravel().tolist()
        reply["similarities"] = candidates.similarities.ravel().astype(float).tolist()
        reply["top-k"] = int(candidates.ids.shape[1])
    else:
        local_model = _model(job, message.content["local"]) if "local" in message.content else global_model
        chosen = select_share(job, client, global_model, local_model, labelled, cycle, int(config["share"]), device)
        reply["ids"] = chosen.astype(int).tolist()
    return Message(content=RecordDict({"reply": ConfigRecord(reply),
                                       "metrics": MetricRecord({"partition-id": client.partition_id})}),
                   reply_to=message)


@app.query("hello")
def hello(message: Message, context: Context) -> Message:
    """The partition id behind this node (Flower's node ids change every run)."""
    partition_id = int(context.node_config["partition-id"])
    return Message(content=RecordDict({"metrics": MetricRecord({"partition-id": partition_id})}), reply_to=message)
