"""Writers of tiny dataset files in each loader's format (idx, SVHN .mat, CIFAR pickles, image folders),
shared by the loader tests."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of an array (uint8 or big-endian int32): magic 0 0 type ndim, big-endian dims, data."""
    type_code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def make_arrays(count: int, seed: int, side: int = 28):
    """`count` random uint8 images [count, side, side] and labels 0..9 cycling."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, side, side), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    return images, labels


def write_idx_set(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, compress: bool = True) -> None:
    """`<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        if compress:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


def write_svhn_mat(path: Path, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A .mat in SVHN's layout: X uint8 [32, 32, 3, N], y [N, 1] with 10 standing for digit 0."""
    rng = np.random.default_rng(seed)
    digits = np.repeat(np.arange(10), per_class)
    rng.shuffle(digits)
    images = rng.integers(0, 256, size=(32, 32, 3, len(digits)), dtype=np.uint8)
    labels = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"X": images, "y": labels})
    return images, digits


def write_svhn_set(root: Path, train: int, extra: int, test: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train/extra/test .mat files under root with the given images per class."""
    return {part: write_svhn_mat(root / f"{part}_32x32.mat", count, seed)
            for seed, (part, count) in enumerate((("train", train), ("extra", extra), ("test", test)))}


def write_cifar_batch(path: Path, rows: np.ndarray, labels: list[int], label_key: bytes) -> None:
    """One pickled CIFAR batch: {b'data': rows [N, 3072], label_key: labels}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {b"batch_label": b"test", b"data": rows, label_key: labels}
    path.write_bytes(pickle.dumps(batch))


def cifar_rows(count: int) -> np.ndarray:
    """[count, 3072] uint8: row i has red 10*i + 1, green 10*i + 2, blue 10*i + 3, then a marked pixel."""
    rows = np.zeros((count, 3072), np.uint8)
    for i in range(count):
        rows[i, :1024], rows[i, 1024:2048], rows[i, 2048:] = 10 * i + 1, 10 * i + 2, 10 * i + 3
        rows[i, 1024 + 32 * 5 + 7] = 255  # green plane, row 5, column 7
    return rows


def write_folder(root: Path, per_class: dict[str, int], size=(40, 30), seed=0) -> None:
    """<root>/<class>/<i>.png random images; every fifth is greyscale (it must come out RGB)."""
    rng = np.random.default_rng(seed)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            mode = "L" if i % 5 == 4 else "RGB"
            Image.fromarray(pixels).convert(mode).save(root / name / f"{i:03d}.png")
