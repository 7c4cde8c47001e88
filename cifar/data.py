"""CIFAR-10 and CIFAR-100 loaders: the python-pickle batches, read directly.

Files are looked for under --data-root (or local_data/data, local_data), in the folder the
archive unpacks to (cifar-10-batches-py/, cifar-100-python/) or in the folder itself. torchvision
only downloads them when missing (needs internet); reading is ours, so no md5 check stands between
a user's (or a test's) files and the loader.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.datasets import Split
from common.errors import UserError
from svhn.data import locate_files, search_folders

CIFAR_SIDE = 32
CIFAR_ROW = 3 * CIFAR_SIDE * CIFAR_SIDE  # a row is the red plane, then green, then blue, each row-major


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant's batches live and which key holds the labels."""

    torchvision_name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes


# The only globals a CIFAR batch needs (numpy arrays; numpy 1 and 2 module names): anything else in a
# pickle could run code, so it is refused, in the spirit of torch.load(..., weights_only=True).
NUMPY_PICKLE_GLOBALS = {
    (module, name)
    for prefix in ("numpy.core", "numpy._core")
    for module, name in ((f"{prefix}.multiarray", "_reconstruct"), (f"{prefix}.multiarray", "scalar"),
                         (f"{prefix}.numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in NUMPY_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return super().find_class(module, name)


CIFAR10 = CifarFormat("CIFAR10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                      ("test_batch",), b"labels")
CIFAR100 = CifarFormat("CIFAR100", "cifar-100-python", ("train",), ("test",), b"fine_labels")


def read_cifar_batch(path: Path, variant: CifarFormat) -> Split:
    """One pickled batch -> images [N, 3, 32, 32] and int64 labels [N]; the contents (uint8, one label
    per image in 0..num_classes-1) are checked by DatasetSpec.load."""
    try:
        with open(path, "rb") as handle:
            batch = NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001  (damaged pickles raise many types: EOFError, UnpicklingError, ...)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read {path}: {detail}") from None
    if not isinstance(batch, dict) or b"data" not in batch or variant.label_key not in batch:
        raise UserError(f"{path} is not a {variant.torchvision_name} batch (no {b'data'!r} and {variant.label_key!r})")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[variant.label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != CIFAR_ROW:
        row = f"rows of {data.shape[1]} values" if data.ndim == 2 else f"data of shape {list(data.shape)}"
        raise UserError(f"{path}: {row}, expected {CIFAR_ROW} (3x{CIFAR_SIDE}x{CIFAR_SIDE}) per image")
    return Split(images=torch.from_numpy(data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)), labels=torch.from_numpy(labels),
                 source=str(path))


def cifar_loader(variant: CifarFormat):
    """A DatasetSpec.loader for one CIFAR variant: one Split per batch file."""

    def load(root: Path | None, train: bool) -> list[Split]:
        folders, download_root = search_folders(root, (variant.folder,))

        def download() -> None:
            import torchvision.datasets

            getattr(torchvision.datasets, variant.torchvision_name)(str(download_root), train=train, download=True)

        paths = locate_files(variant.train_files if train else variant.test_files, folders,
                             variant.torchvision_name, download, download_root)
        return [read_cifar_batch(path, variant) for path in paths]

    return load
