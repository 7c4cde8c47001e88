"""The cold start (--val-per-class 0): no validation set is given; every label a method uses comes from its own
acquisitions, FK's held-out folds included (docs/method.md#cold-start)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from common.experiment import (
    Protocol, RunSettings, acquisition_reference, own_label_parts, prepare_run, training_data,
)
from common import storage
from common.oracle import Oracle
from common.splits import make_split
from conftest import FAST_FLAGS, assert_one_line_error


def test_a_split_without_validation_keeps_every_image_for_the_pool():
    labels = np.repeat(np.arange(4), 100)
    split = make_split(labels, 4, 0, 10, (2, 3), np.random.default_rng(0))
    assert len(split.val_indices) == 0
    pool = labels[split.pool_indices]
    counts = np.bincount(pool)
    assert counts[:2].tolist() == [100, 100] and counts[2:].sum() == 20  # majority whole; minority 200 / ir 10, jointly


@pytest.fixture
def cold_context(digits_spec, digits_data, tmp_path):
    protocol = Protocol(dataset="digits", imbalance=10, val_per_class=0, minority_classes=(5, 6, 7, 8, 9), seed=0)
    return prepare_run(digits_spec, digits_data, protocol, 0, tmp_path, torch.device("cpu"))


def settings(method: str, digits_spec) -> RunSettings:
    return RunSettings(method=method, unsupervised=0, iterations=4, budget=30, schedule=digits_spec.schedule,
                       ensemble=1, mc_samples=3, descriptor_layers=("fc",), top_k=5, val_folds=3)


def test_fk_reads_exactly_the_fold_its_acquiring_model_never_trained_on(cold_context, digits_spec):
    """fk-nn-kfold in the cold start: after iteration t the model trains on its labels but fold t mod 3, and the
    acquisition at t + 1 reads exactly that fold; the two always cover every label, without overlap."""
    ctx, rng = cold_context, np.random.default_rng(1)
    kfold = settings("fk-nn-kfold", digits_spec)
    oracle = Oracle(ctx.pool.labels)
    assert len(acquisition_reference(ctx, kfold, oracle, 0)) == 0  # no label yet: nothing to read
    held_out_sizes = []
    for iteration in range(4):
        unlabelled = np.setdiff1d(np.arange(len(ctx.pool)), oracle.labelled)
        oracle.reveal(rng.choice(unlabelled, size=30, replace=False))
        trained_images, trained_labels = training_data(ctx, kfold, oracle, iteration)
        read = acquisition_reference(ctx, kfold, oracle, iteration + 1)
        assert len(trained_labels) + len(read) == len(oracle.labelled)
        _, trained_positions = own_label_parts(ctx, kfold, oracle, iteration)
        pool = ctx.pool.images
        read_rows = {bytes(image.numpy()) for image in read.images}
        assert not read_rows & {bytes(pool[p].numpy()) for p in trained_positions}
        assert torch.equal(trained_labels, oracle.labels(trained_positions))
        held_out_sizes.append(len(read))
    assert held_out_sizes[-1] == pytest.approx(120 / 3, abs=10)  # about a third of the labels, every class dealt
    split = settings("fk-nn-split", digits_spec)  # the fixed fold: never trained on, read every time
    assert torch.equal(acquisition_reference(ctx, split, oracle, 2).labels,
                       acquisition_reference(ctx, split, oracle, 3).labels)
    baseline = settings("entropy", digits_spec)  # a method that reads no validation trains on every label
    assert own_label_parts(ctx, baseline, oracle, 3) is None
    assert len(training_data(ctx, baseline, oracle, 3)[1]) == 120


def metrics(out: Path, method: str, unsupervised: int = 0) -> list[dict]:
    path = out / "digits" / "ir10_val0" / "run0" / f"unsup{unsupervised}" / method / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_cold_start_run_counts_only_its_own_labels(run_main, tmp_path):
    result = run_main("--out", tmp_path, *FAST_FLAGS, "--dataset", "digits", "--val-per-class", "0",
                      "--methods", "random,fk-nn-kfold,typiclust", "--unsupervised", "0,1", "--iterations", "3")
    assert result.returncode == 0, result.stderr
    rotation = storage.load_checkpoint(tmp_path / "digits" / "ir10_val0" / "run0" / "initial" / "rotation_m0.pt")
    assert rotation["rotation_accuracy"] > 0.5  # its best epoch picked on pool images: rotations need no annotator
    for unsupervised in (0, 1):
        for method in ("random", "fk-nn-kfold", "typiclust"):
            records = metrics(tmp_path, method, unsupervised)
            assert [r["labelled"] for r in records] == [10, 20, 30]
            assert all(r["validation_labels"] == 0 and r["val_per_class"] == 0 for r in records)
        fk = metrics(tmp_path, "fk-nn-kfold", unsupervised)
        # no label at the first acquisition: k-centre (coreset), recorded; FK itself from the second on
        assert [r.get("acquired_with") for r in fk] == ["coreset", None, None]


@pytest.mark.parametrize("flags, message", [
    (["--methods", "fk-nn"], "fk-nn reads a labelled validation set, and --val-per-class 0 gives none"),
    (["--methods", "entropy", "--train-on-validation"], "there is no validation set to train on"),
    (["--methods", "entropy", "--clients", "2"], "is a flag value of central runs"),
    (["--methods", "entropy", "--async-workers", "2"], "is a flag value of central runs"),
])
def test_cold_start_misuse_is_one_line(run_main, tmp_path, flags, message):
    result = run_main("--out", tmp_path, "--quiet", "--device", "cpu", "--dataset", "digits", "--val-per-class", "0",
                      *flags)
    assert message in assert_one_line_error(result)
    assert not (tmp_path / "digits").exists()


def test_a_negative_validation_size_is_refused(run_main, tmp_path):
    result = run_main("--out", tmp_path, *FAST_FLAGS, "--dataset", "digits", "--val-per-class", "-1")
    assert "--val-per-class" in assert_one_line_error(result)


def test_protocol_folders_keep_the_cold_start_apart(cold_context):
    assert cold_context.folder.parent.name == "ir10_val0"
    assert replace(cold_context.protocol, val_per_class=5) != cold_context.protocol
