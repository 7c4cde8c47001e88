"""MNIST-family loaders (mnist/data.py): idx files in both layouts, corruption, and digits."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from datafiles import idx_bytes, make_arrays, write_idx_set

import mnist  # noqa: F401  (registers the datasets)
from common.datasets import DATASETS
from common.errors import UserError
from mnist.data import read_idx


@pytest.fixture
def arrays():
    return {"train": make_arrays(30, 0), "t10k": make_arrays(12, 1)}


def check_split(split, images: np.ndarray, labels: np.ndarray) -> None:
    assert split.images.dtype == torch.uint8
    assert tuple(split.images.shape) == (len(images), 1, 28, 28)
    assert split.labels.dtype == torch.int64
    np.testing.assert_array_equal(split.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(split.labels.numpy(), labels)


def test_mnist_torchvision_layout_gz(tmp_path, arrays):
    raw = tmp_path / "MNIST" / "raw"
    for prefix, (images, labels) in arrays.items():
        write_idx_set(raw, prefix, images, labels, compress=True)
    spec = DATASETS.get("mnist")
    check_split(spec.load(tmp_path, True), *arrays["train"])
    check_split(spec.load(tmp_path, False), *arrays["t10k"])


def test_mnist_plain_layout_uncompressed(tmp_path, arrays):
    for prefix, (images, labels) in arrays.items():
        write_idx_set(tmp_path, prefix, images, labels, compress=False)
    spec = DATASETS.get("mnist")
    check_split(spec.load(tmp_path, True), *arrays["train"])
    check_split(spec.load(tmp_path, False), *arrays["t10k"])


def test_fashion_mnist_torchvision_layout(tmp_path, arrays):
    raw = tmp_path / "FashionMNIST" / "raw"
    for prefix, (images, labels) in arrays.items():
        write_idx_set(raw, prefix, images, labels)
    check_split(DATASETS.get("fashion-mnist").load(tmp_path, True), *arrays["train"])


def test_missing_root_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        DATASETS.get("mnist").load(tmp_path / "nonexistent", True)


def test_truncated_body_is_user_error(tmp_path, arrays):
    images, labels = arrays["train"]
    raw = tmp_path / "MNIST" / "raw"
    write_idx_set(raw, "train", images, labels)
    data = idx_bytes(images)[:-100]
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    with pytest.raises(UserError, match="truncated"):
        DATASETS.get("mnist").load(tmp_path, True)


def test_truncated_gzip_stream_is_user_error(tmp_path, arrays):
    images, labels = arrays["train"]
    write_idx_set(tmp_path, "train", images, labels)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(UserError):
        DATASETS.get("mnist").load(tmp_path, True)


def test_corrupted_gzip_data_is_user_error(tmp_path, arrays):
    """A .gz whose deflate data is damaged (bit rot, bad download) must be a UserError too."""
    images, labels = arrays["train"]
    write_idx_set(tmp_path, "train", images, labels)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[:10] + bytes([255]) * 40 + good[50:])
    with pytest.raises(UserError):
        DATASETS.get("mnist").load(tmp_path, True)


def test_not_idx_is_user_error(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(b"\x01\x02\x03\x04 definitely not idx")
    with pytest.raises(UserError, match="not an idx"):
        read_idx(path)


def test_images_and_labels_count_mismatch_is_user_error(tmp_path):
    images, _ = make_arrays(30, 0)
    write_idx_set(tmp_path, "train", images, np.zeros(29, dtype=np.uint8))
    with pytest.raises(UserError):
        DATASETS.get("mnist").load(tmp_path, True)


def test_read_idx_other_dtype(tmp_path):
    values = np.arange(6, dtype=">i4").reshape(2, 3)
    path = tmp_path / "ints-idx2"
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x0C, 2) + struct.pack(">II", 2, 3) + values.tobytes())
    np.testing.assert_array_equal(read_idx(path), np.arange(6).reshape(2, 3))


def test_digits_loader_shapes_and_fixed_test_split(digits_spec, digits_data):
    from sklearn.datasets import load_digits

    train, test = digits_data.train, digits_data.test
    assert train.images.dtype == torch.uint8 and test.images.dtype == torch.uint8
    assert tuple(train.images.shape[1:]) == (1, 28, 28) and tuple(test.images.shape[1:]) == (1, 28, 28)
    assert len(train) + len(test) == 1797
    assert len(test) == 1797 // 3
    assert train.labels.dtype == torch.int64
    total = np.bincount(load_digits().target, minlength=10)
    np.testing.assert_array_equal(np.bincount(train.labels.numpy(), minlength=10)
                                  + np.bincount(test.labels.numpy(), minlength=10), total)
    again = digits_spec.load(None, False)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0


def test_digits_upscaling_preserves_the_image(digits_data):
    """Every 28x28 digit, downsampled back to 8x8, correlates with one of sklearn's 8x8 images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    originals = digits.images.reshape(1797, 64) / 16.0
    small = torch.nn.functional.adaptive_avg_pool2d(digits_data.test.images[:20].float() / 255, 8).reshape(20, 64)
    small = small.numpy()
    for row, label in zip(small, digits_data.test.labels[:20].numpy()):
        correlations = [np.corrcoef(row, original)[0, 1] for original in originals]
        assert max(correlations) > 0.9
        assert digits.target[int(np.argmax(correlations))] == label
