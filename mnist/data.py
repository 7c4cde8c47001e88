"""Loaders for MNIST, Fashion-MNIST (idx files) and scikit-learn's digits (embedded, offline).

idx files are read directly from any of the usual layouts (a plain folder, torchvision's
<root>/<Name>/raw). When they are missing, torchvision's download is tried (needs internet).
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.datasets import Split
from common.naming import LOCAL_DATA
from common.downloads import download_or_fail
from common.errors import UserError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (optionally gzip-compressed) into an array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an idx file")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * dims :]
    if len(body) != expected:
        raise UserError(f"{path} is truncated ({len(body)} of {expected} bytes)")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _find(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_idx_split(
    roots: list[Path], torchvision_name: str, train: bool, download_root: Path | None
) -> Split:
    """Find `<prefix>-images-idx3-ubyte[.gz]` and labels under `roots`; download if allowed."""
    prefix = "train" if train else "t10k"
    folders = [f for root in roots for f in (root, root / "raw", root / torchvision_name / "raw")]
    images_path = _find(folders, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(folders, f"{prefix}-labels-idx1-ubyte")
    if (images_path is None or labels_path is None) and download_root is not None:
        _download(torchvision_name, download_root, train)
        return load_idx_split(roots, torchvision_name, train, download_root=None)
    if images_path is None or labels_path is None:
        where = ", ".join(str(r) for r in roots)
        raise UserError(f"{torchvision_name} {prefix} files not found under {where}; pass --data-root")
    images, labels = read_idx(images_path), read_idx(labels_path)
    images = images.astype(images.dtype.newbyteorder("="))  # a writable copy in native byte order for torch
    return Split(images=torch.from_numpy(images).unsqueeze(1), labels=torch.from_numpy(labels.astype(np.int64)),
                 source=f"{images_path} and {labels_path}")  # DatasetSpec.load checks the contents


def _download(torchvision_name: str, root: Path, train: bool) -> None:
    """torchvision's own download path, for users with internet."""
    import torchvision.datasets

    download_or_fail(lambda: getattr(torchvision.datasets, torchvision_name)(str(root), train=train, download=True),
                     root, f"{torchvision_name} idx files not found under {root}")


def mnist_loader(torchvision_name: str, system_folders: tuple[str, ...] = ()):
    """A DatasetSpec.loader for an idx-format dataset: --data-root, system folders, local_data/data."""

    def load(root: Path | None, train: bool) -> Split:
        if root is not None:
            if not root.exists():
                raise UserError(f"--data-root {root} does not exist")
            return load_idx_split([root], torchvision_name, train, download_root=root)
        roots = [Path(folder) for folder in system_folders] + [LOCAL_DATA / "data"]
        return load_idx_split(roots, torchvision_name, train, download_root=LOCAL_DATA / "data")

    return load


DIGITS_SIDE = 28  # digits' 8x8 images are upscaled so the same LeNet serves every MNIST-family set
DIGITS_TEST_SHARE = 1 / 3  # a fixed third is the test split (digits ships without one)


def load_digits_split(_root: Path | None, train: bool) -> Split:
    """scikit-learn's embedded digits, upscaled bilinearly to 28x28 uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # [1797, 1, 8, 8]
    images = F.interpolate(images, size=(DIGITS_SIDE, DIGITS_SIDE), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    order = np.random.default_rng(0).permutation(len(labels))  # fixed: the test split never changes
    test_count = int(len(labels) * DIGITS_TEST_SHARE)
    chosen = np.sort(order[test_count:] if train else order[:test_count])
    return Split(images=images[chosen], labels=labels[chosen])
