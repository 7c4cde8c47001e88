"""Stage 2: feature and Fisher-score descriptors, and pseudo-labels for the pool (docs/method.md#descriptors).

z(x): each descriptor layer's activations, global-average-pooled over their spatial axes.
g(x, s): the gradient of CE(logits, s) with respect to the same activations, pooled the same
way. The model is in eval mode, so each image's gradient depends on that image alone.
Both are block-normalised (per layer: centre each row, divide by its std), so the dot
product of two descriptors is a block-size-weighted sum of per-layer Pearson correlations.
"""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common import search
from common.datasets import Split
from common.errors import UserError
from common.images import Images, image_batches
from common.train import ToInput, mixed_precision, model_input, place

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


def images_layout(
    model: nn.Module, layers: tuple[str, ...], images: Images, to_input: ToInput, device: torch.device
) -> DescriptorLayout:
    """The layout of `layers` in `model`, from a dry run on the first of `images` (placed on `device`)."""
    sample = model_input(to_input, images[:1], device)
    return descriptor_layout(place(model, device), layers, sample)


@torch.no_grad()
def layer_features(
    model: nn.Module, images: Images, to_input: ToInput, layer: str, device: torch.device, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled activations of one layer [N, D] and the logits [N, C], in eval mode, batched."""
    place(model, device).eval()
    features, logits = [], []
    with capture_activations(model, (layer,)) as outputs, mixed_precision(device):
        for _, raw in image_batches(images, batch_size, device):
            logits.append(model(model_input(to_input, raw, device)).float().cpu())
            features.append(pool_spatial(outputs[layer]).float().cpu())
    if not features:
        return np.empty((0, 0), np.float32), np.empty((0, 0), np.float32)
    return torch.cat(features).numpy(), torch.cat(logits).numpy()


def block_normalise(vectors: torch.Tensor, layout: DescriptorLayout) -> torch.Tensor:
    """Centre each row inside each block and divide by its (population) std + 1e-10."""
    parts = []
    for start, end in layout.blocks:
        block = vectors[:, start:end]
        centred = block - block.mean(dim=1, keepdim=True)
        parts.append(centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + STD_EPSILON))
    return torch.cat(parts, dim=1)


@dataclass(frozen=True)
class Perturbation:
    """The K perturbed views behind fk-cov and fk-mi: small rotations plus pixel noise."""

    samples: int = 8  # K views per image
    degrees: float = 10.0  # rotation angle drawn uniformly from [-degrees, degrees]
    noise: float = 0.05  # std of Gaussian noise added to the normalised input
    ridge: float = 1e-3  # fk-mi: added to covariances of unit-scaled descriptors


def perturbed_views(x: torch.Tensor, settings: Perturbation, generator: torch.Generator) -> torch.Tensor:
    """[B, C, H, W] -> [K*B, C, H, W]: view k of image b at row k*B + b (kornia rotation)."""
    import kornia.geometry.transform

    views = x.repeat(settings.samples, 1, 1, 1)
    angles = (torch.rand(len(views), generator=generator) * 2 - 1) * settings.degrees
    rotated = kornia.geometry.transform.rotate(views, angles.to(views.device, views.dtype))
    noise = torch.randn(rotated.shape, generator=generator).to(rotated.device, rotated.dtype)
    return (rotated + settings.noise * noise).contiguous(memory_format=torch.channels_last)


def class_gradient_samples(
    model: nn.Module, layers: tuple[str, ...], x: torch.Tensor, settings: Perturbation, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled z [K, B, L] and g_c [C, K, B, L] (float64, not normalised) over K perturbed views.

    g_c = J^T (p - e_c): one backward pass for J^T p and one per class for J^T e_c.
    """
    views = perturbed_views(x, settings, generator)
    with torch.enable_grad(), capture_activations(model, layers) as outputs:
        logits = model(views)
    activations = [outputs[name] for name in layers]

    def pulled_back(weights: torch.Tensor) -> torch.Tensor:  # J^T weights, pooled: [K*B, L]
        grads = torch.autograd.grad(logits, activations, grad_outputs=weights, retain_graph=True)
        return torch.cat([pool_spatial(g) for g in grads], dim=1).double().cpu()

    probabilities = logits.detach().softmax(dim=1)
    expected = pulled_back(probabilities)
    eye = torch.eye(logits.shape[1], device=logits.device, dtype=logits.dtype)
    per_class = torch.stack([expected - pulled_back(eye[c].expand_as(logits)) for c in range(logits.shape[1])])
    z = torch.cat([pool_spatial(a) for a in activations], dim=1).detach().double().cpu()
    shape = (settings.samples, len(x), -1)
    return z.reshape(shape), per_class.reshape((logits.shape[1], *shape))


def _centred_unit_scale(samples: torch.Tensor) -> torch.Tensor:
    """Centre over the K axis (-3) and scale each image's block to unit RMS (ridge is relative)."""
    centred = samples - samples.mean(dim=-3, keepdim=True)
    rms = centred.pow(2).mean(dim=(-3, -1), keepdim=True).sqrt()
    return centred / (rms + 1e-12)


def cross_covariance_trace(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """trace Cov(z, g_c) over the K views: z [K, B, L], g [C, K, B, L] -> [C, B]."""
    samples = z.shape[0]
    zc = z - z.mean(dim=0, keepdim=True)
    gc = g - g.mean(dim=1, keepdim=True)
    return (zc.unsqueeze(0) * gc).sum(dim=(1, 3)) / (samples - 1)


def _ridge_logdet(x: torch.Tensor, ridge: float) -> torch.Tensor:
    """log det(I + X X^T / (ridge (K-1))) for x [..., K, B, D] -> [..., B]: the Gaussian entropy
    term log det(Cov + ridge I) less D log ridge, through the K x K Gram matrix (Sylvester)."""
    samples = x.shape[-3]
    rows = x.movedim(-3, -2)  # [..., B, K, D]
    gram = rows @ rows.transpose(-1, -2) / (ridge * (samples - 1))
    gram = gram + torch.eye(samples, dtype=gram.dtype)
    return 2 * torch.linalg.cholesky(gram).diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)


def gaussian_mutual_information(z: torch.Tensor, g: torch.Tensor, ridge: float) -> torch.Tensor:
    """I(z; g_c) of Gaussians fitted to the K views, with a ridge: z [K, B, L], g [C, K, B, L] -> [C, B].

    0.5 (log det S_z + log det S_g - log det S_zg); the ridge keeps every matrix positive
    definite, so the result is finite and >= 0 (float64, Cholesky).
    """
    zs = _centred_unit_scale(z).unsqueeze(0).expand_as(g)
    gs = _centred_unit_scale(g)
    joint = torch.cat([zs, gs], dim=-1)
    return 0.5 * (_ridge_logdet(zs, ridge) + _ridge_logdet(gs, ridge) - _ridge_logdet(joint, ridge))


@dataclass
class BatchDescriptors:
    """What one forward pass gives a pseudo-labeller: normalised z, logits, and ways to get g."""

    z: torch.Tensor  # [B, L] block-normalised
    logits: torch.Tensor  # [B, C]
    gradients: Callable[[torch.Tensor], torch.Tensor]  # labels [B] -> block-normalised g [B, L]
    true_labels: torch.Tensor | None  # [B], only for labelled images and the oracle
    perturbed: Callable[[], tuple[torch.Tensor, torch.Tensor]]  # () -> z [K, B, L], g [C, K, B, L]
    perturbation: Perturbation


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


def _largest_cross_covariance(batch: BatchDescriptors, _reference: Reference | None) -> torch.Tensor:
    z, g = batch.perturbed()
    return cross_covariance_trace(z, g).argmax(dim=0)


def _largest_mutual_information(batch: BatchDescriptors, _reference: Reference | None) -> torch.Tensor:
    z, g = batch.perturbed()
    return gaussian_mutual_information(z, g, batch.perturbation.ridge).argmax(dim=0)


# Pseudo-label s for g(x, s) (docs/method.md#fk-variants). Validation images always use "true".
PSEUDO_LABELS: dict[str, Labeller] = {
    "true": _true_labels,
    "pred": _predicted_labels,
    "nn": _nearest_by_features,
    "nn-grad": _nearest_by_features_and_gradients,
    "cov": _largest_cross_covariance,
    "mi": _largest_mutual_information,
}


STORES = ("memory", "disk", "auto")


@dataclass(frozen=True)
class DescriptorStore:
    """Where descriptor matrices live while an acquisition runs.

    "memory": numpy arrays; "disk": float32 .npy memmaps under `folder`, so RAM stays bounded
    whatever the pool size (the OS pages rows in and out); "auto": disk for matrices larger
    than `auto_bytes`.
    """

    mode: str = "memory"
    folder: Path | None = None
    auto_bytes: int = 2 << 30

    def __post_init__(self) -> None:
        if self.mode not in STORES:
            raise UserError(f"descriptor store must be one of {', '.join(STORES)}, got {self.mode!r}")
        if self.mode != "memory" and self.folder is None:
            raise ValueError("a disk descriptor store needs a folder")

    def on_disk(self, rows: int, columns: int) -> bool:
        return self.mode == "disk" or (self.mode == "auto" and rows * columns * 4 > self.auto_bytes)

    def allocate(self, name: str, rows: int, columns: int) -> np.ndarray:
        """An uninitialised float32 [rows, columns] matrix, memory-mapped when `on_disk`."""
        if not self.on_disk(rows, columns):
            return np.empty((rows, columns), dtype=np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)
        return np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=(rows, columns))

    def release(self) -> None:
        """Delete the memmap files (their arrays stay readable while referenced, on POSIX)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Descriptors:
    """Descriptors of a set of images: z, optionally g, the logits and the labels used for g.

    z and g are column blocks of one matrix [N, L] or [N, 2L], so the matching vectors of
    z·z' + g·g' need no copy (that matrix may be a memmap).
    """

    matrix: np.ndarray  # [N, L] (z) or [N, 2L] (z | g), block-normalised
    length: int  # L
    logits: np.ndarray | None  # [N, C], unless not kept
    labels: np.ndarray | None  # [N] labels g was computed for

    @property
    def z(self) -> np.ndarray:
        return self.matrix[:, : self.length]

    @property
    def g(self) -> np.ndarray | None:
        return self.matrix[:, self.length :] if self.matrix.shape[1] > self.length else None

    def vectors(self, with_gradients: bool) -> np.ndarray:
        """The matching vector [N, L] or [N, 2L]: z·z' (+ g·g') is its inner product."""
        return self.matrix if with_gradients else self.z


def compute_descriptors(
    model: nn.Module,
    images: Images,
    to_input: ToInput,
    layout: DescriptorLayout,
    device: torch.device,
    pseudo_label: str | None,
    reference: Reference | None = None,
    true_labels: torch.Tensor | None = None,
    batch_size: int = 512,
    progress: bool = False,
    description: str = "descriptors",
    perturbation: Perturbation = Perturbation(),
    seed: int = 0,
    store: DescriptorStore = DescriptorStore(),
    keep_logits: bool = True,
) -> Descriptors:
    """Block-normalised z (and g for the labels `pseudo_label` names) for `images`, streamed
    batch by batch into `store` (bfloat16 autocast on CUDA).

    pseudo_label None computes z and logits only (no backward pass).
    """
    place(model, device).eval()
    count, length = len(images), layout.length
    labeller = PSEUDO_LABELS[pseudo_label] if pseudo_label is not None else None
    matrix = store.allocate(description.replace(" ", "_"), count, 2 * length if labeller else length)
    logits_all, labels_all = [], []
    generator = torch.Generator().manual_seed(seed)  # perturbations (fk-cov, fk-mi) only

    steps = tqdm(image_batches(images, batch_size, device), total=-(-count // batch_size), desc=description,
                 disable=not progress, leave=False)
    for part, raw in steps:
        x = model_input(to_input, raw, device)
        with torch.set_grad_enabled(labeller is not None), capture_activations(model, layout.layers) as outputs, \
                mixed_precision(device):
            logits = model(x).float()
        activations = [outputs[name] for name in layout.layers]
        z = block_normalise(torch.cat([pool_spatial(a.detach().float()) for a in activations], dim=1).cpu(), layout)
        matrix[part, :length] = z.numpy()
        if keep_logits:
            logits_all.append(logits.detach().cpu())
        if labeller is None:
            continue

        def gradients(labels: torch.Tensor) -> torch.Tensor:
            loss = F.cross_entropy(logits, labels.to(device), reduction="sum")
            grads = torch.autograd.grad(loss, activations, retain_graph=True)
            return block_normalise(torch.cat([pool_spatial(g).float() for g in grads], dim=1).cpu(), layout)

        batch_true = true_labels[part] if true_labels is not None else None
        view = BatchDescriptors(
            z=z, logits=logits.detach().cpu(), gradients=gradients, true_labels=batch_true,
            perturbed=lambda: class_gradient_samples(model, layout.layers, x, perturbation, generator),
            perturbation=perturbation,
        )
        labels = labeller(view, reference)
        matrix[part, length:] = gradients(labels).numpy()
        labels_all.append(labels.cpu())

    if isinstance(matrix, np.memmap):
        matrix.flush()
    return Descriptors(
        matrix=matrix,
        length=length,
        logits=torch.cat(logits_all).numpy() if logits_all else (np.empty((0, 0), np.float32) if keep_logits else None),
        labels=torch.cat(labels_all).numpy() if labels_all else None,
    )


def validation_descriptors(
    model: nn.Module,
    validation: Split,
    to_input: ToInput,
    layout: DescriptorLayout,
    device: torch.device,
    with_gradients: bool,
    batch_size: int = 512,
    progress: bool = False,
    store: DescriptorStore = DescriptorStore(),
) -> Descriptors:
    """The labelled validation images' z and logits, and g against their true labels when
    `with_gradients` (validation images always use their true label for g)."""
    return compute_descriptors(
        model, validation.images, to_input, layout, device,
        pseudo_label="true" if with_gradients else None, true_labels=validation.labels,
        batch_size=batch_size, progress=progress, description="validation descriptors", store=store,
    )
