"""SVHN (.mat, train+extra) and CIFAR-10/100 (pickle) loaders, ResNet-10, and a tiny SVHN run.py run."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from datafiles import cifar_rows, write_cifar_batch, write_svhn_mat, write_svhn_set
from scipy.io import savemat
from test_cli_runs import check_method_folder, find_method_folder

import cifar  # noqa: F401  (registers the datasets)
import svhn  # noqa: F401
from common.datasets import DATASETS
from common.errors import UserError
from common.gen_descr import descriptor_layout, layer_features
from common.splits import default_minority_classes, make_split
from svhn.resnet import RESNET10_DESCRIPTOR_LAYERS, BasicBlock, ResNet10


@pytest.fixture
def no_download(monkeypatch):
    """No internet here: torchvision's downloads fail as they would offline."""
    import torchvision.datasets

    def offline(*_args, **_kwargs):
        raise OSError("network unreachable")

    for name in ("SVHN", "CIFAR10", "CIFAR100"):
        monkeypatch.setattr(torchvision.datasets, name, offline)


def test_svhn_train_is_train_then_extra_and_test_split(tmp_path):
    written = write_svhn_set(tmp_path / "svhn", train=3, extra=2, test=1)
    spec = DATASETS.get("svhn")
    train, test = spec.load(tmp_path, True), spec.load(tmp_path, False)  # found in the svhn/ subfolder
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert tuple(train.images.shape) == (50, 3, 32, 32) and tuple(test.images.shape) == (10, 3, 32, 32)
    expected = np.concatenate([written["train"][1], written["extra"][1]])
    np.testing.assert_array_equal(train.labels.numpy(), expected)  # 10 became 0, train before extra
    np.testing.assert_array_equal(test.labels.numpy(), written["test"][1])
    assert set(train.labels.tolist()) == set(range(10))
    for part, offset in (("train", 0), ("extra", 30)):
        images = written[part][0]  # [h, w, c, n]
        for h, w, c, n in ((0, 0, 0, 0), (1, 2, 0, 3), (5, 31, 2, 7), (31, 4, 1, 19)):
            assert int(train.images[offset + n, c, h, w]) == int(images[h, w, c, n])


def test_svhn_missing_file_names_it(tmp_path, no_download):
    write_svhn_mat(tmp_path / "train_32x32.mat", 1, 0)
    with pytest.raises(UserError, match="extra_32x32.mat") as error:
        DATASETS.get("svhn").load(tmp_path, True)
    assert "download failed (OSError)" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="does not exist"):
        DATASETS.get("svhn").load(tmp_path / "nowhere", True)


def test_svhn_corrupt_or_foreign_mat_is_user_error(tmp_path, no_download):
    write_svhn_set(tmp_path, train=1, extra=1, test=1)
    (tmp_path / "extra_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(UserError, match="cannot read .*extra_32x32.mat") as error:
        DATASETS.get("svhn").load(tmp_path, True)
    assert "\n" not in str(error.value)
    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((28, 28, 1, 4), np.uint8), "y": np.ones((4, 1))})
    with pytest.raises(UserError, match="test_32x32.mat: images are 1x28x28, expected 3x32x32"):
        DATASETS.get("svhn").load(tmp_path, False)


def test_imbalance_protocol_on_svhn(tmp_path):
    write_svhn_set(tmp_path, train=40, extra=10, test=1)
    labels = DATASETS.get("svhn").load(tmp_path, True).labels.numpy()
    split = make_split(labels, 10, val_per_class=5, imbalance=2, minority_classes=default_minority_classes(10),
                       rng=np.random.default_rng(0))
    assert np.array_equal(np.bincount(labels[split.val_indices], minlength=10), np.full(10, 5))
    pool_counts = np.bincount(labels[split.pool_indices], minlength=10)
    assert np.array_equal(pool_counts[:5], np.full(5, 45))
    assert pool_counts[5:].sum() == (5 * 45) // 2  # the minority union, floor(N_majority / ir)
    assert not np.isin(split.val_indices, split.pool_indices).any()


def test_resnet10_shapes_blocks_and_descriptor_lengths():
    model = ResNet10(10).eval()
    sample = torch.randn(3, 3, 32, 32)
    assert tuple(model(sample).shape) == (3, 10)
    blocks = [module for module in model.modules() if isinstance(module, BasicBlock)]
    assert len(blocks) == 4
    assert all(len(getattr(model, f"layer{i}")) == 1 for i in range(1, 5))
    assert descriptor_layout(model, RESNET10_DESCRIPTOR_LAYERS["l256"], sample).sizes == (256,)
    assert descriptor_layout(model, RESNET10_DESCRIPTOR_LAYERS["l768"], sample).sizes == (256, 512)
    spec = DATASETS.get("svhn")
    features, logits = layer_features(model, torch.zeros(5, 3, 32, 32, dtype=torch.uint8), spec.normalise,
                                      spec.penultimate, torch.device("cpu"))
    assert features.shape == (5, 512) and logits.shape == (5, 10)
    dropout = ResNet10(4, mc_dropout=True)  # the rotation head; dropout adds no weights
    assert dropout.state_dict().keys() == ResNet10(4).state_dict().keys()
    assert dropout.dropout.p == 0.5 and model.dropout.p == 0.0


def check_cifar_images(images: torch.Tensor, count: int) -> None:
    assert images.dtype == torch.uint8 and tuple(images.shape) == (count, 3, 32, 32)
    for i in range(count):
        assert int(images[i, 0, 31, 31]) == 10 * (i % 4) + 1  # the first 1024 values are the red channel
        assert int(images[i, 1, 0, 0]) == 10 * (i % 4) + 2 and int(images[i, 2, 9, 3]) == 10 * (i % 4) + 3
        assert int(images[i, 1, 5, 7]) == 255 and int(images[i, 1, 7, 5]) == 10 * (i % 4) + 2


def test_cifar10_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    for b in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{b}", cifar_rows(4), [b, b, 0, 9], b"labels")
    write_cifar_batch(folder / "test_batch", cifar_rows(4), [3, 2, 1, 0], b"labels")
    spec = DATASETS.get("cifar10")
    train, test = spec.load(tmp_path, True), spec.load(tmp_path, False)
    check_cifar_images(train.images, 20)
    check_cifar_images(test.images, 4)
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [label for b in range(1, 6) for label in (b, b, 0, 9)]
    assert test.labels.tolist() == [3, 2, 1, 0]
    assert spec.load(folder, False).labels.tolist() == [3, 2, 1, 0]  # --data-root at the batches folder itself


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    for name, labels in (("train", [99, 0, 42, 7]), ("test", [5, 6, 7, 8])):
        write_cifar_batch(folder / name, cifar_rows(4), labels, b"fine_labels")
    spec = DATASETS.get("cifar100")
    train = spec.load(tmp_path, True)
    check_cifar_images(train.images, 4)
    assert train.labels.tolist() == [99, 0, 42, 7] and spec.num_classes == 100
    assert spec.load(tmp_path, False).labels.tolist() == [5, 6, 7, 8]


class RunsCode:
    def __reduce__(self):
        return print, ("this pickle ran code",)


def test_cifar_missing_corrupt_and_foreign_pickles_are_user_errors(tmp_path, no_download, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batch(folder / "test_batch", cifar_rows(4), [0, 1, 2, 3], b"labels")
    spec = DATASETS.get("cifar10")
    with pytest.raises(UserError, match="data_batch_1 not found"):
        spec.load(tmp_path, True)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    with pytest.raises(UserError, match="cannot read"):
        spec.load(tmp_path, False)
    (folder / "test_batch").write_bytes(pickle.dumps(RunsCode()))
    with pytest.raises(UserError, match="refusing"):
        spec.load(tmp_path, False)
    assert "ran code" not in capsys.readouterr().out
    write_cifar_batch(folder / "test_batch", np.zeros((2, 100), np.uint8), [0, 1], b"labels")
    with pytest.raises(UserError, match="3072"):
        spec.load(tmp_path, False)
    write_cifar_batch(folder / "test_batch", cifar_rows(2), [0, 10], b"labels")
    with pytest.raises(UserError, match=r"test_batch: label 10 outside 0\.\.9"):
        spec.load(tmp_path, False)


def test_svhn_end_to_end_run(tmp_path, run_main):
    write_svhn_set(tmp_path / "data", train=40, extra=10, test=10)
    out = tmp_path / "out"
    result = run_main("--dataset", "svhn", "--data-root", tmp_path / "data", "--out", out, "--val-per-class", "5",
                      "--imbalance", "2", "--budget", "10", "--iterations", "2", "--epochs", "1",
                      "--methods", "random,fk-nn", "--batch-size", "64", "--device", "cpu", "--quiet", "--runs", "1")
    assert result.returncode == 0, result.stderr
    for method in ("random", "fk-nn"):
        check_method_folder(find_method_folder(out, method, dataset="svhn"), method, imbalance=2.0, dataset="svhn",
                            budget=10, iterations=2)
