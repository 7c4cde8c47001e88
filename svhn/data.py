"""SVHN loader: the cropped-digit .mat files, train split = train_32x32.mat + extra_32x32.mat.

Files are looked for under --data-root (or local_data/data, local_data) and their svhn/ or SVHN/
subfolders. When they are missing, torchvision's download is tried (needs internet). The helpers
that find files and fall back to a download are shared with the CIFAR loaders (cifar/data.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common.datasets import Split
from common.naming import LOCAL_DATA
from common.downloads import download_or_fail
from common.errors import UserError

SVHN_TRAIN_FILES = ("train_32x32.mat", "extra_32x32.mat")  # concatenated in this order
SVHN_TEST_FILES = ("test_32x32.mat",)
SVHN_IMAGE_SHAPE = (3, 32, 32)  # (C, H, W); the .mat layout is X [H, W, C, N]


def search_folders(root: Path | None, subfolders: tuple[str, ...]) -> tuple[list[Path], Path]:
    """The folders to look in and where a download goes: --data-root (must exist) or local_data/data."""
    if root is not None:
        if not root.exists():
            raise UserError(f"--data-root {root} does not exist")
        bases, download_root = [root], root
    else:
        bases, download_root = [LOCAL_DATA / "data", LOCAL_DATA], LOCAL_DATA / "data"
    return [base / sub for base in bases for sub in ("", *subfolders)], download_root


def locate_files(
    names: tuple[str, ...], folders: list[Path], what: str, download: Callable[[], object] | None,
    download_root: Path | None = None,
) -> list[Path]:
    """The path of every file in `names` (each from the first folder holding it).

    If any is missing, `download` (torchvision's into `download_root`, for users with internet) runs once
    and the search is repeated; a file still missing, or a failed download, is a one-line UserError.
    """
    found = {name: next((folder / name for folder in folders if (folder / name).is_file()), None) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if not missing:
        return [found[name] for name in names]
    where = ", ".join(str(folder) for folder in folders)
    if download is None:
        raise UserError(f"{what} file {missing[0]} not found under {where}; pass --data-root")
    download_or_fail(download, download_root, f"{what} file {missing[0]} not found under {where}")
    return locate_files(names, folders, what, download=None)


def read_svhn_mat(path: Path) -> Split:
    """One .mat file -> images [N, C, H, W] and int64 labels [N] (SVHN's label 10 is digit 0); the
    contents (uint8 3x32x32, labels 0..9) are checked by DatasetSpec.load."""
    from scipy.io import loadmat

    try:
        contents = loadmat(path, variable_names=("X", "y"))
    except Exception as exc:  # noqa: BLE001  (scipy raises many types for damaged files)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read {path}: {detail}") from None
    images, labels = contents.get("X"), contents.get("y")
    if images is None or labels is None:
        raise UserError(f"{path} is not an SVHN .mat file (no X and y arrays)")
    if images.ndim != 4:
        raise UserError(f"{path}: X should be [32, 32, 3, N], got {list(images.shape)}")
    labels = labels.reshape(-1).astype(np.int64)
    return Split(images=torch.from_numpy(images.transpose(3, 2, 0, 1)),  # [H, W, C, N] -> [N, C, H, W] (a view)
                 labels=torch.from_numpy(np.where(labels == 10, 0, labels)), source=str(path))


def load_svhn(root: Path | None, train: bool) -> list[Split]:
    """A DatasetSpec.loader for SVHN: train and extra (joined in this order), or test."""
    folders, download_root = search_folders(root, ("svhn", "SVHN"))

    def download() -> None:
        import torchvision.datasets

        for split in ("train", "extra") if train else ("test",):
            torchvision.datasets.SVHN(str(download_root), split=split, download=True)

    paths = locate_files(SVHN_TRAIN_FILES if train else SVHN_TEST_FILES, folders, "SVHN", download, download_root)
    return [read_svhn_mat(path) for path in paths]
