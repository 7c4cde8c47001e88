"""Where images come from: in-memory uint8 tensors (MNIST, SVHN, CIFAR) or files decoded on demand
(ImageNet-scale folders that do not fit in memory).

Every loop over images (training, prediction, descriptors) reads through `image_batches`, so a
dataset only needs an `ImageSource` to be streamed; in-memory datasets stay plain tensors and
keep their fast slicing path.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import torch

from common.errors import UserError


class ImageSource(ABC):
    """An ordered set of images decoded on demand. Positions index this source's own order."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def take(self, positions: np.ndarray) -> ImageSource:
        """A view of the images at `positions` (nothing is decoded)."""

    @abstractmethod
    def read(self, positions: np.ndarray, augment: bool) -> torch.Tensor:
        """Decode the images at `positions`: uint8 [B, C, H, W], in that order."""

    def concat(self, other: ImageSource) -> ImageSource:
        raise TypeError(f"{type(self).__name__} cannot be joined with {type(other).__name__}")

    def stream(
        self, order: np.ndarray, batch_size: int, augment: bool, device: torch.device
    ) -> Iterator[torch.Tensor]:
        """uint8 batches of the images at `order`, in that order (sources override this to decode
        in parallel or on the GPU)."""
        for start in range(0, len(order), batch_size):
            yield self.read(order[start : start + batch_size], augment)

    def __getitem__(self, key) -> torch.Tensor:
        """Tensor-like indexing (a slice, an index tensor or array): the decoded images."""
        positions = np.arange(len(self))[key.numpy() if isinstance(key, torch.Tensor) else key]
        return self.read(np.atleast_1d(positions), augment=False)


Images = torch.Tensor | ImageSource


def read_image_file(path: str, mode: str) -> torch.Tensor:
    """One image file decoded by PIL and converted to `mode` ("L" or "RGB"): uint8 [C, H, W] at the file's size.
    A missing, unreadable or corrupt file is a one-line UserError naming it."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(path) as file:
            return pil_to_tensor(file.convert(mode))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # missing, truncated, not an image
        cause = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"cannot decode {path}: {(cause.splitlines() or [type(exc).__name__])[0]}") from None


def take(images: Images, positions: np.ndarray | torch.Tensor) -> Images:
    """The subset at `positions`: copied for tensors, a view for lazy sources."""
    if isinstance(images, ImageSource):
        return images.take(np.asarray(positions, dtype=np.int64))
    index = positions if isinstance(positions, torch.Tensor) else torch.from_numpy(np.asarray(positions, dtype=np.int64))
    return images[index]


def concat(first: Images, second: Images) -> Images:
    if isinstance(first, ImageSource):
        return first.concat(second)
    return torch.cat([first, second])


def is_lazy(images: Images) -> bool:
    return isinstance(images, ImageSource)


def image_batches(
    images: Images,
    batch_size: int,
    device: torch.device,
    order: torch.Tensor | None = None,
    augment: bool = False,
) -> Iterator[tuple[slice | torch.Tensor, torch.Tensor]]:
    """(index, uint8 batch) pairs covering `images` in `order` (default: as stored).

    The index (a slice, or a slice of `order`) addresses labels and outputs of the same images.
    Lazy sources may return batches already on `device` (DALI decodes on the GPU).
    """
    count = len(images) if order is None else len(order)
    parts = [slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    indices = parts if order is None else [order[part] for part in parts]
    if not isinstance(images, ImageSource):
        for index in indices:
            yield index, images[index]
        return
    positions = np.arange(len(images)) if order is None else order.numpy()
    yield from zip(indices, images.stream(positions, batch_size, augment, device))
