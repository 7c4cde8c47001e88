"""Damaged dataset contents and failed downloads, through run.py: each ends in one
stderr line naming the file and the problem, exit code 2, and a failed download leaves --data-root as it was."""
from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from conftest import assert_one_line_error
from datafiles import cifar_rows, make_arrays, write_cifar_batch, write_folder, write_idx_set, write_svhn_set
from scipy.io import savemat

import cifar  # noqa: F401  (registers the datasets)
import mnist  # noqa: F401
import svhn  # noqa: F401
from common.datasets import DATASETS
from imagenet import image_folder_spec

QUICK = ("--runs", "1", "--iterations", "1", "--budget", "5", "--epochs", "1", "--val-per-class", "2",
         "--methods", "random", "--quiet", "--device", "cpu")
IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def cli_error(run_main, dataset: str, root: Path) -> str:
    """run.py on `root`: the one stderr line it ends with (exit code 2)."""
    result = run_main("--dataset", dataset, "--data-root", root, "--out", root.parent / "out", *QUICK)
    line = assert_one_line_error(result)
    assert result.returncode == 2, result.stderr
    return line


def write_idx_root(root: Path, dataset: str, images: np.ndarray, labels: np.ndarray) -> Path:
    """A damaged train split (the one loaded first) and a good test split in torchvision's layout."""
    raw = root / IDX_FOLDERS[dataset] / "raw"
    write_idx_set(raw, "train", images, labels)
    write_idx_set(raw, "t10k", *make_arrays(10, 1))
    return raw


@pytest.mark.parametrize("dataset", sorted(IDX_FOLDERS))
def test_idx_images_of_another_size(run_main, tmp_path, dataset):
    raw = write_idx_root(tmp_path / "data", dataset, *make_arrays(30, 0, side=20))
    line = cli_error(run_main, dataset, tmp_path / "data")
    assert str(raw / "train-images-idx3-ubyte.gz") in line
    assert "images are 1x20x20, expected 1x28x28" in line


def test_idx_labels_out_of_range(run_main, tmp_path):
    images, labels = make_arrays(30, 0)
    labels[[3, 7, 9]] = (12, 10, 11)
    raw = write_idx_root(tmp_path / "data", "mnist", images, labels)
    line = cli_error(run_main, "mnist", tmp_path / "data")
    assert str(raw / "train-labels-idx1-ubyte.gz") in line
    assert "labels 10..12 outside 0..9" in line


def test_idx_images_not_uint8(run_main, tmp_path):
    images, labels = make_arrays(30, 0)
    raw = write_idx_root(tmp_path / "data", "mnist", images.astype(">i4"), labels)
    line = cli_error(run_main, "mnist", tmp_path / "data")
    assert str(raw / "train-images-idx3-ubyte.gz") in line and "int32, expected uint8" in line


def test_idx_files_without_images(run_main, tmp_path):
    raw = write_idx_root(tmp_path / "data", "mnist", *make_arrays(0, 0))
    line = cli_error(run_main, "mnist", tmp_path / "data")
    assert str(raw / "train-images-idx3-ubyte.gz") in line and "no images" in line


def test_svhn_labels_out_of_range_name_the_file(run_main, tmp_path):
    """SVHN's labels are 1..10 with 10 standing for digit 0: 10 is legal, 11 is not."""
    write_svhn_set(tmp_path / "data", train=2, extra=2, test=1)
    labels = np.arange(1, 12).reshape(-1, 1)  # 1..11
    savemat(tmp_path / "data" / "extra_32x32.mat", {"X": np.zeros((32, 32, 3, 11), np.uint8), "y": labels})
    line = cli_error(run_main, "svhn", tmp_path / "data")
    assert str(tmp_path / "data" / "extra_32x32.mat") in line and "train_32x32.mat" not in line
    assert "label 11 outside 0..9" in line


def test_svhn_images_of_another_size(run_main, tmp_path):
    write_svhn_set(tmp_path / "data", train=2, extra=2, test=1)
    savemat(tmp_path / "data" / "extra_32x32.mat", {"X": np.zeros((20, 20, 3, 4), np.uint8), "y": np.ones((4, 1))})
    line = cli_error(run_main, "svhn", tmp_path / "data")
    assert str(tmp_path / "data" / "extra_32x32.mat") in line
    assert "images are 3x20x20, expected 3x32x32" in line


def test_svhn_file_without_images(run_main, tmp_path):
    write_svhn_set(tmp_path / "data", train=2, extra=2, test=1)
    savemat(tmp_path / "data" / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 0), np.uint8), "y": np.ones((0, 1))})
    line = cli_error(run_main, "svhn", tmp_path / "data")
    assert str(tmp_path / "data" / "train_32x32.mat") in line and "no images" in line


def write_cifar10(folder: Path, bad_batch: str, rows: np.ndarray, labels: list[int]) -> None:
    """CIFAR-10's six batches of four images; `bad_batch` holds `rows` and `labels` instead."""
    for name in [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]:
        good = name != bad_batch
        write_cifar_batch(folder / name, cifar_rows(4) if good else rows, [0, 1, 2, 3] if good else labels, b"labels")


def test_cifar_labels_out_of_range_name_the_batch(run_main, tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    write_cifar10(folder, "data_batch_3", cifar_rows(4), [0, 12, 10, 9])
    line = cli_error(run_main, "cifar10", tmp_path / "data")
    assert str(folder / "data_batch_3") in line and "labels 10..12 outside 0..9" in line


def test_cifar100_fine_label_100_is_out_of_range(run_main, tmp_path):
    folder = tmp_path / "data" / "cifar-100-python"
    write_cifar_batch(folder / "train", cifar_rows(4), [0, 99, 100, 5], b"fine_labels")
    write_cifar_batch(folder / "test", cifar_rows(4), [0, 1, 2, 3], b"fine_labels")
    line = cli_error(run_main, "cifar100", tmp_path / "data")
    assert str(folder / "train") in line and "label 100 outside 0..99" in line


def test_cifar_rows_of_another_length(run_main, tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    write_cifar10(folder, "data_batch_2", np.zeros((4, 1024), np.uint8), [0, 1, 2, 3])
    line = cli_error(run_main, "cifar10", tmp_path / "data")
    assert str(folder / "data_batch_2") in line and "rows of 1024 values, expected 3072" in line


FOLDER_SET = "contents-test-folder"


@pytest.fixture
def folder_spec():
    if FOLDER_SET not in DATASETS:
        DATASETS.register(FOLDER_SET, image_folder_spec(FOLDER_SET, 2, Path("/nonexistent"), crop=8, resize=8))
    return DATASETS.get(FOLDER_SET)


@pytest.mark.parametrize("train_classes, expected", [
    ({"ant": 0, "bee": 0}, "no images under {train}"),  # class folders, not one image in them
    ({}, "{train} has 0 class folders, expected 2"),
])
def test_image_folder_without_images(run_main, tmp_path, folder_spec, train_classes, expected):
    write_folder(tmp_path / "data" / "train", train_classes)
    (tmp_path / "data" / "train").mkdir(parents=True, exist_ok=True)
    write_folder(tmp_path / "data" / "val", {"ant": 1, "bee": 1})
    line = cli_error(run_main, FOLDER_SET, tmp_path / "data")
    assert expected.format(train=tmp_path / "data" / "train") in line


# What torchvision's download writes before the network fails (a folder and a partial file).
OFFLINE_WRITES = {"mnist": ("MNIST", "MNIST/raw/train-images-idx3-ubyte.gz"),
                  "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw/train-images-idx3-ubyte.gz"),
                  "svhn": ("SVHN", "train_32x32.mat"),
                  "cifar10": ("CIFAR10", "cifar-10-python.tar.gz"),
                  "cifar100": ("CIFAR100", "cifar-100-python.tar.gz")}


def tree(root: Path) -> list[tuple[str, bytes | None]]:
    """Every path under `root` with its bytes (None for a folder)."""
    return sorted((str(path.relative_to(root)), None if path.is_dir() else path.read_bytes())
                  for path in root.rglob("*"))


@pytest.mark.parametrize("dataset, existing", [
    ("mnist", ()),  # the report: an empty --data-root got an empty MNIST/raw tree
    ("mnist", ("notes.txt", "MNIST/processed/notes.txt")),  # what was there stays, MNIST/raw goes
    ("fashion-mnist", ()),
    ("svhn", ("svhn/notes.txt",)),
    ("cifar10", ()),
    ("cifar100", ("cifar-100-python/notes.txt",)),
])
def test_failed_download_leaves_the_data_root_as_it_was(run_main, tmp_path, monkeypatch, dataset, existing):
    import torchvision.datasets

    name, partial = OFFLINE_WRITES[dataset]

    def offline(root, *_args, **_kwargs):
        (Path(root) / partial).parent.mkdir(parents=True, exist_ok=True)
        (Path(root) / partial).write_bytes(b"half a download")
        raise URLError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, name, offline)
    root = tmp_path / "data"
    root.mkdir()
    for relative in existing:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("the user's")
    before = tree(root)
    line = cli_error(run_main, dataset, root)
    assert "download failed (URLError)" in line
    assert tree(root) == before


def test_failed_download_into_a_missing_root_removes_the_folders_it_made(tmp_path):
    """No --data-root: the download goes to local_data/data, which may not exist yet."""
    from common.downloads import download_or_fail
    from common.errors import UserError

    (tmp_path / "notes.txt").write_text("the user's")
    root = tmp_path / "local_data" / "data"

    def offline():
        (root / "MNIST" / "raw").mkdir(parents=True)
        raise URLError("network unreachable")

    with pytest.raises(UserError, match=r"^MNIST not found under .* and the download failed \(URLError\)"):
        download_or_fail(offline, root, f"MNIST not found under {root}")
    assert tree(tmp_path) == [("notes.txt", b"the user's")]
