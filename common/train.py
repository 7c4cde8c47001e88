"""Training and evaluation of the task model (docs/method.md#active-learning-loop). Plain loops, no framework."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.errors import UserError
from common.images import Images, image_batches
from common.schedule import Schedule
from common.seeding import torch_global_seed

ToInput = Callable[[torch.Tensor], torch.Tensor]  # uint8 images [B, C, H, W] -> float input
# (model, input batch, logits [B, C], labels [B]) -> scalar loss; plain cross-entropy when none is given.
# Federated clients pass FedProx's proximal term or KAFAL's KCFU through it.
LossFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(_model: nn.Module, _x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when PyTorch sees a GPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA GPU on this machine; use --device cpu or auto")
    return torch.device(name)


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to `device` in channels-last layout (about 1.8x faster convolutions and
    pooling on CPU for LeNet here, and the layout tensor cores want on GPU)."""
    return model.to(device=device, memory_format=torch.channels_last)


def model_input(to_input: ToInput, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images -> the network's float input on `device`, channels-last like `place`."""
    return to_input(images.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)


PRECISION_VARIABLE = "FKAL_PRECISION"  # "float32" turns CUDA's bfloat16 autocast off (gpu_check's agreement check)


def mixed_precision(device: torch.device) -> torch.autocast:
    """bfloat16 autocast on CUDA (tensor cores, half the activation memory; no loss scaling needed),
    full precision on the CPU, or anywhere when FKAL_PRECISION=float32."""
    enabled = device.type == "cuda" and os.environ.get(PRECISION_VARIABLE, "bfloat16") != "float32"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def set_cpu_threads(count: int) -> None:
    """Threads for PyTorch's and FAISS's CPU kernels (oversubscribed cores slow both badly)."""
    import faiss

    torch.set_num_threads(count)
    faiss.omp_set_num_threads(count)


def batches(count: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most `batch_size` covering range(count)."""
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def train_model(
    model: nn.Module,
    images: Images,
    labels: torch.Tensor,
    schedule: Schedule,
    to_input: ToInput,
    seed: int,
    device: torch.device,
    progress: bool = False,
    description: str = "train",
    batch_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    on_epoch_end: Callable[[int], bool | None] | None = None,
    loss: LossFunction | None = None,
) -> float:
    """Train `model` in place with SGD on (images, labels); a fresh optimiser every call.

    `batch_transform(x, y)` may rewrite each normalised batch (rotation pretraining uses it);
    `loss` replaces the cross-entropy (federated clients' FedProx and KCFU); `on_epoch_end(epoch)` runs after
    every epoch and stops the training when it returns True (LoGo's local-only model).
    Returns the seconds spent.
    """
    start = time.perf_counter()
    place(model, device).train()
    optimiser = torch.optim.SGD(
        model.parameters(), lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay
    )
    order_generator = torch.Generator().manual_seed(seed)
    loss = loss or cross_entropy_loss
    with torch_global_seed(seed):
        for epoch in tqdm(range(schedule.epochs), desc=description, disable=not progress, leave=False):
            for group in optimiser.param_groups:
                group["lr"] = schedule.lr_at(epoch)
            model.train()
            order = torch.randperm(len(labels), generator=order_generator)
            for index, raw in image_batches(images, schedule.batch_size, device, order=order, augment=True):
                x = model_input(to_input, raw, device)
                y = labels[index].to(device)
                if batch_transform is not None:
                    x, y = batch_transform(x, y)
                with mixed_precision(device):
                    batch_loss = loss(model, x, model(x).float(), y)
                optimiser.zero_grad(set_to_none=True)
                batch_loss.backward()
                optimiser.step()
            if on_epoch_end is not None and on_epoch_end(epoch):
                break  # the callback says the model is trained enough
    return time.perf_counter() - start


def enable_dropout(model: nn.Module) -> None:
    """Eval mode everywhere except dropout layers (MC-dropout inference)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.Dropout3d)):
            module.train()


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: Images, to_input: ToInput, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    """Eval-mode logits [N, C] on the CPU."""
    place(model, device).eval()
    outputs = []
    with mixed_precision(device):
        for _, raw in image_batches(images, batch_size, device):
            outputs.append(model(model_input(to_input, raw, device)).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


@torch.no_grad()
def predict_probabilities(
    models: Sequence[nn.Module], images: Images, to_input: ToInput, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    """Mean softmax [N, C] of an ensemble (one model is an ensemble of one)."""
    total = None
    for model in models:
        probs = predict_logits(model, images, to_input, device, batch_size).softmax(dim=1)
        total = probs if total is None else total + probs
    return total / len(models)


@torch.no_grad()
def mc_dropout_probabilities(
    models: Sequence[nn.Module],
    images: Images,
    to_input: ToInput,
    device: torch.device,
    samples: int,
    seed: int,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Softmax outputs [E*K, N, C] of K dropout-on passes through each of E models."""
    per_model = []
    with torch_global_seed(seed):
        for model in models:
            place(model, device)
            enable_dropout(model)
            chunks = []
            for _, raw in image_batches(images, batch_size, device):
                x = model_input(to_input, raw, device)
                with mixed_precision(device):
                    chunks.append(torch.stack([model(x).float().softmax(dim=1).cpu() for _ in range(samples)]))
            per_model.append(torch.cat(chunks, dim=1))
            model.eval()
    return torch.cat(per_model, dim=0)


def accuracy_report(
    predicted: np.ndarray, truth: np.ndarray, num_classes: int, minority_classes: Sequence[int]
) -> dict[str, float | list[float]]:
    """Test accuracy, per-class accuracy, balanced accuracy and mean minority-class accuracy."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    correct = predicted == truth
    counts = np.bincount(truth, minlength=num_classes)
    hits = np.bincount(truth, weights=correct, minlength=num_classes)
    class_acc = np.divide(hits, counts, out=np.full(num_classes, np.nan), where=counts > 0)
    present = counts > 0
    minority = [c for c in minority_classes if present[c]]
    return {
        "test_acc": float(correct.mean()) if len(correct) else float("nan"),
        "balanced_acc": float(class_acc[present].mean()),
        "minority_acc": float(np.mean(class_acc[minority])) if minority else float("nan"),
        "class_acc": [None if np.isnan(a) else float(a) for a in class_acc],
    }
