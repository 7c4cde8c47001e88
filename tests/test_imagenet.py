"""Streamed image folders (imagenet/), the ImageNet imbalance protocol, the disk descriptor store,
and a tiny ImageFolder run end to end on the CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from datafiles import write_folder
from PIL import Image

from common.datasets import DATASETS
from common.errors import UserError
from common.experiment import DatasetArrays, Protocol, prepare_run
from common.gen_descr import DescriptorStore, compute_descriptors, descriptor_layout
from common.images import concat, image_batches, take
from common.schedule import Schedule
from common.seeding import numpy_rng
from common.splits import MINORITY_RULES, make_split, seeded_half_classes
from imagenet import image_folder_spec
from imagenet.folder import FolderImages, class_folders, scan_image_folder
from imagenet.resnet import RESNET18_DESCRIPTOR_LAYERS, ResNet18

CLASSES = ("ant", "bee", "cat", "dog")
TINY = "tiny-folder"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    write_folder(root / "train", {name: 24 for name in CLASSES})
    write_folder(root / "val", {name: 6 for name in CLASSES if name != "bee"}, seed=1)  # test split lacks a class
    return root


@pytest.fixture(scope="module")
def tiny_spec(tiny_root):
    if TINY not in DATASETS:
        DATASETS.register(TINY, image_folder_spec(
            TINY, len(CLASSES), tiny_root, crop=32, resize=36,
            schedule=Schedule(lr=0.05, momentum=0.9, batch_size=16, epochs=1, milestones=()),
            pretrain_schedule=Schedule(lr=0.05, momentum=0.9, batch_size=16, epochs=1, milestones=()),
            budget=8, iterations=2, val_per_class=3, top_k=4, inference_batch_size=16, default_imbalance=2,
        ))
    return DATASETS.get(TINY)


def test_scan_labels_by_train_class_order(tiny_root):
    classes = class_folders(tiny_root / "train")
    assert classes == list(CLASSES)
    paths, labels = scan_image_folder(tiny_root / "val", classes)
    assert len(paths) == 18
    assert set(labels.tolist()) == {0, 2, 3}  # 'bee' is missing: cat stays 2, not 1
    assert all(b"/cat/" in p for p in paths[labels == 2])


def test_unknown_test_class_is_a_user_error(tmp_path):
    write_folder(tmp_path / "train", {"ant": 2})
    write_folder(tmp_path / "val", {"bee": 1})
    with pytest.raises(UserError, match="lacks: bee"):
        scan_image_folder(tmp_path / "val", class_folders(tmp_path / "train"))


def test_loader_decodes_to_rgb_centre_crops(tiny_spec, tiny_root):
    split = tiny_spec.load(tiny_root, True)
    assert len(split) == 96 and split.labels.dtype == torch.int64
    images = split.images[:7]
    assert images.shape == (7, 3, 32, 32) and images.dtype == torch.uint8
    # resize shorter side 30 -> 36 then centre crop 32 matches torchvision on the decoded file
    from torchvision.transforms import v2
    grey = v2.functional.pil_to_tensor(Image.open(tiny_root / "train" / "ant" / "004.png").convert("RGB"))
    expected = v2.CenterCrop(32)(v2.Resize(36, antialias=True)(grey))
    assert torch.equal(images[4], expected)


def test_corrupt_image_is_a_user_error(tmp_path):
    write_folder(tmp_path / "train", {"ant": 1})
    (tmp_path / "train" / "ant" / "000.png").write_bytes(b"not a png")
    paths, _ = scan_image_folder(tmp_path / "train", ["ant"])
    with pytest.raises(UserError, match="cannot decode"):
        FolderImages(paths, crop=8, resize=8)[:1]
    in_workers = FolderImages(paths, crop=8, resize=8, workers=1)  # the error crosses the process boundary
    with pytest.raises(UserError, match=r"^cannot decode .*000\.png"):
        list(image_batches(in_workers, 1, torch.device("cpu"), order=torch.tensor([0])))


def test_views_workers_and_augmentation(tiny_spec, tiny_root):
    source = tiny_spec.load(tiny_root, True).images
    view = take(source, np.array([5, 1, 90]))
    assert len(view) == 3 and torch.equal(view[:], source[np.array([5, 1, 90])])
    joined = concat(view, take(source, np.array([2])))
    assert torch.equal(joined[3:], source[2:3])
    parallel = FolderImages(source.paths, crop=32, resize=36, workers=2)
    order = torch.tensor([9, 3, 50, 7, 0])
    streamed = list(image_batches(parallel, 2, torch.device("cpu"), order=order))
    assert [index.tolist() for index, _ in streamed] == [[9, 3], [50, 7], [0]]
    assert torch.equal(torch.cat([batch for _, batch in streamed]), source[order])
    torch.manual_seed(0)
    augmented = source.read(np.array([0, 0]), augment=True)
    assert augmented.shape == (2, 3, 32, 32) and not torch.equal(augmented[0], augmented[1])


def test_seeded_half_minority_and_per_class_imbalance():
    rules_a = [MINORITY_RULES["seeded-half"](10, numpy_rng(seed, "minority")) for seed in (0, 0, 1)]
    assert len(rules_a[0]) == 5 and rules_a[0] == rules_a[1] and rules_a[0] != rules_a[2]
    assert seeded_half_classes(10, np.random.default_rng(3)) == tuple(sorted(seeded_half_classes(10, np.random.default_rng(3))))
    labels = np.repeat(np.arange(4), [50, 60, 70, 80])
    split = make_split(labels, 4, val_per_class=10, imbalance=10, minority_classes=(1, 3),
                       rng=np.random.default_rng(0), imbalance_rule="per-class")
    counts = np.bincount(labels[split.pool_indices], minlength=4)
    assert counts.tolist() == [40, 5, 60, 7]  # floor(50/10), floor(70/10) for the minority classes
    assert not np.intersect1d(split.pool_indices, split.val_indices).size


def test_resnet18_descriptor_lengths_and_dropout_shares_weights():
    plain, dropout = ResNet18(7, mc_dropout=False), ResNet18(7, mc_dropout=True)
    assert plain.state_dict().keys() == dropout.state_dict().keys()
    x = torch.randn(2, 3, 32, 32)
    for name, length in (("l256", 256), ("l768", 768)):
        assert descriptor_layout(plain.eval(), RESNET18_DESCRIPTOR_LAYERS[name], x).length == length
    assert plain.eval()(x).shape == (2, 7)


def test_disk_store_round_trips_and_matches_memory(tmp_path, tiny_spec, tiny_root):
    images = tiny_spec.load(tiny_root, False).images
    model = ResNet18(4).eval()
    layout = descriptor_layout(model, ("layer3",), images[:1].float())
    common = dict(pseudo_label="pred", batch_size=5)
    in_memory = compute_descriptors(model, images, tiny_spec.normalise, layout, torch.device("cpu"), **common)
    store = DescriptorStore("disk", tmp_path / "scratch")
    on_disk = compute_descriptors(model, images, tiny_spec.normalise, layout, torch.device("cpu"), store=store,
                                  description="pool", **common)
    assert isinstance(on_disk.matrix, np.memmap)
    np.testing.assert_allclose(on_disk.matrix, in_memory.matrix, atol=1e-5)
    reread = np.load(tmp_path / "scratch" / "pool.npy", mmap_mode="r")
    np.testing.assert_array_equal(reread, on_disk.matrix)
    assert on_disk.vectors(True).shape == (18, 512) and on_disk.vectors(False).shape == (18, 256)
    store.release()
    assert not (tmp_path / "scratch").exists()


def test_auto_store_goes_to_disk_only_above_its_threshold(tmp_path):
    store = DescriptorStore("auto", tmp_path, auto_bytes=1000)
    assert not store.on_disk(10, 20) and store.on_disk(10, 30)
    assert isinstance(store.allocate("big", 10, 30), np.memmap)
    assert not isinstance(store.allocate("small", 10, 20), np.memmap)
    with pytest.raises(UserError):
        DescriptorStore("cloud", tmp_path)


def test_tiny_image_folder_end_to_end_on_cpu(run_main, tiny_spec, tiny_root, tmp_path):
    out = tmp_path / "out"
    result = run_main("--dataset", TINY, "--data-root", tiny_root, "--out", out, "--methods", "random,entropy,fk-nn",
                      "--runs", "1", "--device", "cpu", "--quiet", "--descriptor-store", "disk",
                      "--unsupervised", "0,1")
    assert result.returncode == 0, result.stderr
    run = out / TINY / "ir2_val3" / "run0"
    protocol = json.loads((run / "protocol.json").read_text())
    assert protocol["imbalance_rule"] == "per-class" and len(protocol["minority_classes"]) == 2
    for unsup in (0, 1):
        for method in ("random", "entropy", "fk-nn"):
            lines = (run / f"unsup{unsup}" / method / "metrics.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines]
            assert [r["labelled"] for r in records] == [8, 16]
            assert len(records[0]["class_acc"]) == 4 and records[0]["class_acc"][1] is None  # no 'bee' test images
            chosen = np.concatenate([np.load(run / f"unsup{unsup}" / method / f"acquired_{b:03d}.npy") for b in (0, 1)])
            assert len(np.unique(chosen)) == 16
    assert not (run / "unsup0" / "fk-nn" / "scratch").exists()  # memmaps removed after each acquisition


def test_missing_image_folder_is_one_line_error(run_main, tiny_spec, tmp_path):
    assert_one_line_error(run_main("--dataset", TINY, "--data-root", tmp_path / "none", "--quiet"))


def test_vaal_refuses_streamed_datasets(run_main, tiny_spec, tiny_root, tmp_path):
    line = assert_one_line_error(run_main("--dataset", TINY, "--data-root", tiny_root, "--out", tmp_path,
                                          "--methods", "vaal", "--runs", "1", "--device", "cpu", "--quiet"))
    assert "vaal" in line


def test_prepare_run_keeps_pool_lazy(tiny_spec, tiny_root, tmp_path):
    data = DatasetArrays(train=tiny_spec.load(tiny_root, True), test=tiny_spec.load(tiny_root, False))
    protocol = Protocol(TINY, 2.0, 3, (1, 3), 0, "per-class")
    ctx = prepare_run(tiny_spec, data, protocol, 0, tmp_path, torch.device("cpu"))
    assert isinstance(ctx.pool.images, FolderImages) and len(ctx.pool.images) == len(ctx.pool.labels)
    assert torch.equal(ctx.pool.images[:2], data.train.images[ctx.split.pool_indices[:2]])


def test_dali_source_is_chosen_when_available_and_falls_back_on_cpu(monkeypatch, tiny_spec, tiny_root):
    import imagenet
    from imagenet.dali import DaliFolderImages

    monkeypatch.setattr(imagenet, "dali_available", lambda: True)
    source = tiny_spec.load(tiny_root, True).images
    assert isinstance(source, DaliFolderImages)
    order = torch.tensor([3, 0, 7])
    streamed = torch.cat([batch for _, batch in image_batches(source, 2, torch.device("cpu"), order=order)])
    assert torch.equal(streamed, FolderImages(source.paths, crop=32, resize=36, workers=0)[order])


@pytest.mark.parametrize("cuda, dali_installed, expected", [
    (False, False, False), (False, True, False), (True, False, False), (True, True, True),
])
def test_dali_is_used_only_with_both_a_gpu_and_dali(monkeypatch, cuda, dali_installed, expected):
    """dali_available() asks torch for a GPU and tries the import; both are faked here, the function is real."""
    import sys
    import types

    from imagenet.dali import dali_available

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if dali_installed:
        fake = types.ModuleType("nvidia.dali")
        monkeypatch.setitem(sys.modules, "nvidia", types.ModuleType("nvidia"))
        monkeypatch.setitem(sys.modules, "nvidia.dali", fake)
    else:
        monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # an import of it raises ImportError
    assert dali_available() is expected
