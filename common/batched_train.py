"""Train many same-shaped small models as one: their weights stacked, one vmapped forward and backward per
step (torch.func), so 40 LeNets cost a few kernel launches a step instead of 40 times as many.

Each model keeps its own training set, its own shuffle (a generator seeded as train_model seeds it) and
its own SGD state: SGD is elementwise, so one optimiser over the stacked tensors is every model's own
optimiser. The result equals train_model run model by model up to float rounding (batched kernels sum
in another order). What can be trained this way (`can_train_together`): the same architecture, no
buffers (BatchNorm's running statistics do not vmap), no active dropout (its masks would differ from
train_model's), the same number of labels, images in memory (lazy sources augment per image).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from common.schedule import Schedule
from common.train import ToInput, mixed_precision, model_input


def can_join(model: nn.Module, images) -> bool:
    """Whether this model and training set may be part of a batched training at all: no buffers (BatchNorm's
    running statistics do not vmap), no active dropout, images in memory."""
    return (not any(True for _ in model.buffers())
            and not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
            and isinstance(images, torch.Tensor))


def can_train_together(models: Sequence[nn.Module], images: Sequence, labels: Sequence[torch.Tensor]) -> bool:
    """Whether `train_together` may train these models (see the module docstring)."""
    first = models[0]
    shapes = [(name, tuple(p.shape)) for name, p in first.named_parameters()]
    return (
        all([(n, tuple(p.shape)) for n, p in model.named_parameters()] == shapes for model in models)
        and all(type(model) is type(first) for model in models)
        and all(can_join(model, x) for model, x in zip(models, images, strict=True))
        and len({len(y) for y in labels}) == 1
    )


def train_together(models: Sequence[nn.Module], images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                   schedule: Schedule, to_input: ToInput, seeds: Sequence[int], device: torch.device) -> float:
    """Train every model in place on its own (images, labels) with its own seed, as train_model would one
    by one; returns the seconds spent. The caller checks can_train_together first."""
    began = time.perf_counter()
    count, size = len(models), len(labels[0])
    base = copy.deepcopy(models[0]).to("meta")
    params, _buffers = stack_module_state([model.to(device).train() for model in models])  # as train_model leaves them
    optimiser = torch.optim.SGD(params.values(), lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    stacked_labels = torch.stack([y.to(device) for y in labels])  # [M, N]
    inputs = torch.stack([model_input(to_input, x, device) for x in images])  # [M, N, C, H, W], normalised once
    rows = torch.arange(count, device=device)[:, None]

    def loss_of_one(weights: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, weights, (x,)).float(), y)

    batched_loss = vmap(loss_of_one)
    for epoch in range(schedule.epochs):
        for group in optimiser.param_groups:
            group["lr"] = schedule.lr_at(epoch)
        orders = torch.stack([torch.randperm(size, generator=g) for g in generators])  # [M, N]
        for start in range(0, size, schedule.batch_size):
            index = orders[:, start : start + schedule.batch_size]  # [M, B]
            index = index.to(device)
            x, y = inputs[rows, index], stacked_labels[rows, index]
            with mixed_precision(device):
                total = batched_loss(params, x, y).sum()  # each model's gradient is its own mean loss's
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
    with torch.no_grad():
        for m, model in enumerate(models):
            for name, parameter in model.named_parameters():
                parameter.copy_(params[name][m])
    return time.perf_counter() - began
