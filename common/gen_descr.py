"""Stage 2: feature and Fisher-score descriptors, and pseudo-labels for the pool (SPEC section 4).

z(x): each descriptor layer's activations, global-average-pooled over their spatial axes.
g(x, s): the gradient of CE(logits, s) with respect to the same activations, pooled the same
way. The model is in eval mode, so each image's gradient depends on that image alone.
Both are block-normalised (per layer: centre each row, divide by its std), so the dot
product of two descriptors is a block-size-weighted sum of per-layer Pearson correlations.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common import search
from common.errors import UserError
from common.train import ToInput, batches, model_input, place

STD_EPSILON = 1e-10


@dataclass(frozen=True)
class DescriptorLayout:
    """Which layers form a descriptor and where each one's block lies in the vector."""

    layers: tuple[str, ...]
    sizes: tuple[int, ...]  # channels (or features) of each layer

    @property
    def length(self) -> int:
        return sum(self.sizes)

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """[start, end) of each layer's block, e.g. LeNet L=80: [(0, 10), (10, 30), (30, 80)]."""
        ends = np.cumsum(self.sizes).tolist()
        return list(zip([0] + ends[:-1], ends))


@contextlib.contextmanager
def capture_activations(model: nn.Module, layers: tuple[str, ...]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules during forward passes inside the block."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise UserError(f"descriptor layers {missing} are not in the model; its layers: {[n for n in modules if n]}")
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            outputs[name] = output

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def pool_spatial(activation: torch.Tensor) -> torch.Tensor:
    """[B, C, *spatial] -> [B, C] by the mean over all spatial axes (any shape); [B, C] unchanged."""
    return activation.flatten(2).mean(dim=2) if activation.dim() > 2 else activation


def descriptor_layout(model: nn.Module, layers: tuple[str, ...], sample: torch.Tensor) -> DescriptorLayout:
    """Derive block sizes from one dry-run forward pass (no hard-coded lengths)."""
    model.eval()
    with torch.no_grad(), capture_activations(model, layers) as outputs:
        model(sample)
    return DescriptorLayout(layers=layers, sizes=tuple(pool_spatial(outputs[name]).shape[1] for name in layers))


def block_normalise(vectors: torch.Tensor, layout: DescriptorLayout) -> torch.Tensor:
    """Centre each row inside each block and divide by its (population) std + 1e-10."""
    parts = []
    for start, end in layout.blocks:
        block = vectors[:, start:end]
        centred = block - block.mean(dim=1, keepdim=True)
        parts.append(centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + STD_EPSILON))
    return torch.cat(parts, dim=1)


@dataclass
class BatchDescriptors:
    """What one forward pass gives a pseudo-labeller: normalised z, logits, and a way to get g."""

    z: torch.Tensor  # [B, L] block-normalised
    logits: torch.Tensor  # [B, C]
    gradients: Callable[[torch.Tensor], torch.Tensor]  # labels [B] -> block-normalised g [B, L]
    true_labels: torch.Tensor | None  # [B], only for labelled images and the oracle


class Reference:
    """The labelled validation images' descriptors that pseudo-labels are looked up in.

    The FAISS indices are built once, on first use, and shared by every pool batch.
    """

    def __init__(self, z: np.ndarray, g: np.ndarray, labels: np.ndarray) -> None:
        self.z, self.g, self.labels = z, g, labels  # [V, L], [V, L] (true labels), [V]
        self._indices: dict[bool, object] = {}

    def nearest_labels(self, queries: np.ndarray, with_gradients: bool) -> torch.Tensor:
        """Label of the most similar validation image by z (or by z and g) for each query."""
        if with_gradients not in self._indices:
            keys = np.concatenate([self.z, self.g], axis=1) if with_gradients else self.z
            self._indices[with_gradients] = search.inner_product_index(keys)
        _, ids = search.search(self._indices[with_gradients], queries, 1)
        return torch.from_numpy(self.labels[ids[:, 0]])


Labeller = Callable[[BatchDescriptors, "Reference | None"], torch.Tensor]


def _true_labels(batch: BatchDescriptors, _reference: Reference | None) -> torch.Tensor:
    if batch.true_labels is None:
        raise ValueError("true labels are needed for this pseudo-label")
    return batch.true_labels


def _predicted_labels(batch: BatchDescriptors, _reference: Reference | None) -> torch.Tensor:
    return batch.logits.argmax(dim=1)


def _nearest_by_features(batch: BatchDescriptors, reference: Reference | None) -> torch.Tensor:
    return reference.nearest_labels(batch.z.numpy(), with_gradients=False)


def _nearest_by_features_and_gradients(batch: BatchDescriptors, reference: Reference | None) -> torch.Tensor:
    g_predicted = batch.gradients(batch.logits.argmax(dim=1))
    return reference.nearest_labels(torch.cat([batch.z, g_predicted], dim=1).numpy(), with_gradients=True)


# Pseudo-label s for g(x, s): SPEC section 4. Validation images always use "true".
PSEUDO_LABELS: dict[str, Labeller] = {
    "true": _true_labels,
    "pred": _predicted_labels,
    "nn": _nearest_by_features,
    "nn-grad": _nearest_by_features_and_gradients,
}


@dataclass
class Descriptors:
    """Descriptors of a set of images: z, optionally g, the logits and the labels used for g."""

    z: np.ndarray  # [N, L] block-normalised
    g: np.ndarray | None  # [N, L] block-normalised, or None for features only
    logits: np.ndarray  # [N, C]
    labels: np.ndarray | None  # [N] labels g was computed for

    def vectors(self, with_gradients: bool) -> np.ndarray:
        """The matching vector [N, L] or [N, 2L]: z·z' (+ g·g') is its inner product."""
        return np.concatenate([self.z, self.g], axis=1) if with_gradients else self.z


def compute_descriptors(
    model: nn.Module,
    images: torch.Tensor,
    to_input: ToInput,
    layout: DescriptorLayout,
    device: torch.device,
    pseudo_label: str | None,
    reference: Reference | None = None,
    true_labels: torch.Tensor | None = None,
    batch_size: int = 512,
    progress: bool = False,
    description: str = "descriptors",
) -> Descriptors:
    """Block-normalised z (and g for the labels `pseudo_label` names) for `images`, batched.

    pseudo_label None computes z and logits only (no backward pass).
    """
    place(model, device).eval()
    count = len(images)
    z_all = np.empty((count, layout.length), dtype=np.float32)
    g_all = np.empty((count, layout.length), dtype=np.float32) if pseudo_label is not None else None
    logits_all, labels_all = [], []
    labeller = PSEUDO_LABELS[pseudo_label] if pseudo_label is not None else None

    for part in tqdm(list(batches(count, batch_size)), desc=description, disable=not progress, leave=False):
        x = model_input(to_input, images[part], device)
        with torch.set_grad_enabled(labeller is not None), capture_activations(model, layout.layers) as outputs:
            logits = model(x)
        activations = [outputs[name] for name in layout.layers]
        z = block_normalise(torch.cat([pool_spatial(a) for a in activations], dim=1).detach().float().cpu(), layout)
        z_all[part] = z.numpy()
        logits_all.append(logits.detach().float().cpu())
        if labeller is None:
            continue

        def gradients(labels: torch.Tensor) -> torch.Tensor:
            loss = F.cross_entropy(logits, labels.to(device), reduction="sum")
            grads = torch.autograd.grad(loss, activations, retain_graph=True)
            return block_normalise(torch.cat([pool_spatial(g) for g in grads], dim=1).float().cpu(), layout)

        batch_true = true_labels[part] if true_labels is not None else None
        view = BatchDescriptors(z=z, logits=logits.detach().float().cpu(), gradients=gradients, true_labels=batch_true)
        labels = labeller(view, reference)
        g_all[part] = gradients(labels).numpy()
        labels_all.append(labels.cpu())

    return Descriptors(
        z=z_all,
        g=g_all,
        logits=torch.cat(logits_all).numpy() if logits_all else np.empty((0, 0), np.float32),
        labels=torch.cat(labels_all).numpy() if labels_all else None,
    )
