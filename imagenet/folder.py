"""ImageFolder-style datasets streamed from disk: <root>/<split>/<class>/<image>.

Images are decoded on demand (PIL) in DataLoader workers: evaluation resizes the
shorter side to `resize` and takes the centre `crop`; training takes a random resized crop and
a random horizontal flip. Nothing but the file list is held in memory, so a 1.28M-image pool
costs about 100 MB of paths (stored as bytes).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from common.errors import UserError
from common.images import ImageSource, read_image_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def class_folders(root: Path) -> list[str]:
    """The sorted class folder names of an image folder (label c = the c-th name)."""
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist (expected <class>/<image> folders)")
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def scan_image_folder(root: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Image files of `root`'s class folders: paths [N] and labels [N], label = index in `classes`
    (so a test split lacking a class keeps the train split's numbering)."""
    unknown = sorted(set(class_folders(root)) - set(classes))
    if unknown:
        raise UserError(f"{root} has class folders the train split lacks: {', '.join(unknown[:5])}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        if not (root / name).is_dir():
            continue
        files = sorted(
            entry.path for entry in os.scandir(root / name)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)
        )
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise UserError(f"no images under {root} (expected <class>/<image> folders)")
    # bytes, not str: numpy stores str at 4 bytes per character
    return np.asarray([os.fsencode(path) for path in paths]), np.asarray(labels, dtype=np.int64)


def evaluation_transform(crop: int, resize: int) -> v2.Compose:
    """uint8 [C, H, W] of any size -> [C, crop, crop]: the shorter side resized to `resize`, the centre cropped
    (how every image of a folder dataset is evaluated, and how predict.py prepares a user's file)."""
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])


def default_workers() -> int:
    """Decoding processes: every core but one, at most 8 (fewer than that starve a GPU)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class FolderImages(ImageSource):
    """Image files decoded on demand to uint8 [C, crop, crop]: C is 3 for `mode` "RGB" (grey and RGBA files
    become RGB), 1 for "L". Training batches are augmented (random resized crop, horizontal flip) unless
    `augment_training` is False (small greyscale images: the MNIST family trains without augmentation)."""

    def __init__(self, paths: np.ndarray, crop: int, resize: int, workers: int | None = None,
                 positions: np.ndarray | None = None, mode: str = "RGB", augment_training: bool = True) -> None:
        self.paths, self.crop, self.resize, self.mode = paths, crop, resize, mode
        self.workers = default_workers() if workers is None else workers
        self.positions = np.arange(len(paths)) if positions is None else positions
        self.augment_training = augment_training
        self.evaluate = evaluation_transform(crop, resize)
        self.augment = v2.Compose([v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.positions)

    def _view(self, positions: np.ndarray) -> FolderImages:
        return type(self)(self.paths, self.crop, self.resize, self.workers, positions, self.mode, self.augment_training)

    def take(self, positions: np.ndarray) -> FolderImages:
        return self._view(self.positions[positions])

    def concat(self, other: ImageSource) -> FolderImages:
        if not isinstance(other, FolderImages) or other.paths is not self.paths:
            raise TypeError("only views of the same image folder can be joined")
        return self._view(np.concatenate([self.positions, other.positions]))

    def decode(self, position: int, augment: bool) -> torch.Tensor:
        """One image: uint8 [C, crop, crop] in this source's mode."""
        image = read_image_file(os.fsdecode(self.paths[self.positions[position]]), self.mode)
        return (self.augment if augment and self.augment_training else self.evaluate)(image)

    def read(self, positions: np.ndarray, augment: bool) -> torch.Tensor:
        return torch.stack([self.decode(int(p), augment) for p in positions])

    def stream(self, order: np.ndarray, batch_size: int, augment: bool, device: torch.device) -> Iterator[torch.Tensor]:
        if self.workers == 0:
            yield from super().stream(order, batch_size, augment, device)
            return
        chunks = [order[start : start + batch_size].tolist() for start in range(0, len(order), batch_size)]
        loader = DataLoader(
            _Decoded(self, augment), batch_sampler=chunks, num_workers=self.workers, collate_fn=_stack_or_error,
            pin_memory=device.type == "cuda", prefetch_factor=4,
        )
        for batch in loader:
            if isinstance(batch, str):  # a worker's UserError, raised here as the one-line error it is
                raise UserError(batch)
            yield batch


class _Decoded(Dataset):
    """The Dataset face of a FolderImages view (positions in, decoded images out)."""

    def __init__(self, images: FolderImages, augment: bool) -> None:
        self.images, self.augment = images, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> torch.Tensor | str:
        try:
            return self.images.decode(position, self.augment)
        except UserError as error:  # re-raised in a worker it would reach the user wrapped in a traceback
            return str(error)


def _stack_or_error(images: list[torch.Tensor | str]) -> torch.Tensor | str:
    """One uint8 batch, or the first decoding error's message."""
    errors = [image for image in images if isinstance(image, str)]
    return errors[0] if errors else torch.stack(images)
