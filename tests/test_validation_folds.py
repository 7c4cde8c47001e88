"""FK that also learns from its validation set: class-stratified folds, the held-out-fold plans, and the
central loop training on every fold but the one whose misses the next acquisition reads."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import common.loop as loop
from common.datasets import DATASETS
from common.experiment import Protocol, RunSettings, method_folder, prepare_run, run_active_learning, validation_parts
from common.strategies import STRATEGIES, AcquisitionOptions
from common.validation_folds import HeldOutFolds, stratified_folds
from planning import parse, protocols
from conftest import FAST_FLAGS, assert_one_line_error

CPU = torch.device("cpu")


def test_folds_are_class_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [10, 7, 5, 3])
    folds = stratified_folds(labels, 5, np.random.default_rng(0))
    assert set(folds) == set(range(5))
    for label in range(4):  # each class spread evenly: fold sizes differ by at most one
        counts = np.bincount(folds[labels == label], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1  # and so are the folds overall
    assert np.array_equal(folds, stratified_folds(labels, 5, np.random.default_rng(0)))
    assert not np.array_equal(folds, stratified_folds(labels, 5, np.random.default_rng(1)))
    with pytest.raises(ValueError):
        stratified_folds(labels, 1, np.random.default_rng(0))


def test_split_reads_one_fold_and_trains_on_the_rest_every_iteration():
    fold_of = np.array([0, 1, 2, 0, 1, 2, 0])
    for iteration in range(4):
        read, trained = HeldOutFolds(rotate=False).parts(fold_of, iteration, 3)
        assert read.tolist() == [0, 3, 6]
        assert trained.tolist() == [1, 2, 4, 5]


def test_kfold_reads_exactly_the_fold_the_acquiring_model_did_not_see():
    fold_of = np.arange(12) % 4
    plan = HeldOutFolds(rotate=True)
    read_folds = []
    for iteration in range(1, 9):
        _, trained_before = plan.parts(fold_of, iteration - 1, 4)
        read, _ = plan.parts(fold_of, iteration, 4)
        assert not np.isin(read, trained_before).any()  # never seen by the model trained at iteration - 1
        assert len(read) + len(trained_before) == len(fold_of)
        read_folds.append(int(fold_of[read[0]]))
    assert sorted(read_folds[:4]) == [0, 1, 2, 3]  # every fold serves as the miss-set part in turn


@pytest.mark.parametrize("method, rotate", [("fk-nn-split", False), ("fk-nn-kfold", True)])
def test_registered_with_their_plan_and_setting(method, rotate):
    strategy = STRATEGIES.get(method)
    assert strategy.held_out_folds == HeldOutFolds(rotate=rotate)
    assert strategy.uses_validation_labels and "val_folds" in strategy.run_settings
    assert STRATEGIES.get("fk-nn").held_out_folds is None


def rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


@pytest.mark.parametrize("method", ["fk-nn-split", "fk-nn-kfold"])
def test_central_run_trains_on_all_folds_but_the_one_it_reads_next(digits_spec, digits_data, tmp_path, monkeypatch,
                                                                   method):
    protocol = Protocol(dataset="digits", imbalance=10.0, val_per_class=10, minority_classes=(5, 6, 7, 8, 9), seed=0)
    ctx = prepare_run(digits_spec, digits_data, protocol, 0, tmp_path, CPU, log=lambda _line: None)
    settings = RunSettings(method=method, unsupervised=0, iterations=4, budget=10,
                           schedule=digits_spec.schedule.with_epochs(1), ensemble=1, mc_samples=3,
                           descriptor_layers=digits_spec.descriptor_layers["l80"], top_k=32, val_folds=4)
    read_sets, trained_sets = [], []
    real_acquire, real_training_set = loop.acquire, loop.training_set

    def spy_acquire(strategy, state, name):
        read_sets.append(rows(state.validation.images))
        return real_acquire(strategy, state, name)

    def spy_training_set(pool, oracle, validation=None, count=None):
        trained_sets.append(rows(validation.images))
        return real_training_set(pool, oracle, validation, count)

    monkeypatch.setattr(loop, "acquire", spy_acquire)
    monkeypatch.setattr(loop, "training_set", spy_training_set)
    records = run_active_learning(ctx, settings, AcquisitionOptions(
        device=CPU, descriptor_layers=settings.descriptor_layers, top_k=32))

    everything = rows(ctx.validation.images)
    assert len(everything) == len(ctx.validation)  # digits has no duplicate images in this split
    for iteration in range(4):
        assert 0.2 * len(everything) <= len(read_sets[iteration]) <= 0.3 * len(everything)  # one fold of 4
        assert 0.7 * len(everything) <= len(trained_sets[iteration]) <= 0.8 * len(everything)  # the other 3
        if iteration:  # the acquiring model (trained at iteration - 1) saw every fold but the one read
            assert not read_sets[iteration] & trained_sets[iteration - 1]
            assert read_sets[iteration] | trained_sets[iteration - 1] == everything
    assert (read_sets[1] == read_sets[3]) is (method == "fk-nn-split")
    assert all(r["validation_labels"] == len(ctx.validation) for r in records)  # every validation label counted
    assert (method_folder(ctx, settings) / "settings.json").read_text().count('"val_folds": 4') == 1


def test_plain_methods_read_everything_and_train_on_it_only_when_asked(digits_spec, digits_data, tmp_path):
    protocol = Protocol(dataset="digits", imbalance=10.0, val_per_class=10, minority_classes=(5, 6, 7, 8, 9), seed=0)
    ctx = prepare_run(digits_spec, digits_data, protocol, 0, tmp_path, CPU, log=lambda _line: None)
    base = RunSettings(method="fk-nn", unsupervised=0, iterations=1, budget=10, schedule=digits_spec.schedule,
                       ensemble=1, mc_samples=3, descriptor_layers=(), top_k=32)
    read, trained = validation_parts(ctx, base, 3)
    assert read is ctx.validation and trained is None
    read, trained = validation_parts(ctx, replace(base, train_on_validation=True), 3)
    assert read is ctx.validation and trained is ctx.validation


@pytest.mark.parametrize("args, expected", [
    (["--methods", "fk-nn-split", "--train-on-validation"], "already trains"),
    (["--methods", "fk-nn-kfold", "--val-folds", "1"], "at least 2"),
    (["--methods", "fk-nn-kfold", "--val-folds", "500", "--val-per-class", "10"], "more than the 100 validation"),
    (["--methods", "fk-nn-split", "--async-workers", "2"], "central-only"),
])
def test_held_out_fold_mistakes_are_one_line_errors(run_main, tmp_path, args, expected):
    line = assert_one_line_error(run_main("--out", tmp_path, *FAST_FLAGS, *args))
    assert expected in line


def test_a_chosen_minority_set_runs_beside_the_default_one(run_main, tmp_path):
    """Both protocols in one --out: each keeps its own split (they used to collide on one folder)."""
    base = ["--out", tmp_path, *FAST_FLAGS, "--methods", "random", "--val-per-class", "10"]
    assert run_main(*base).returncode == 0
    assert run_main(*base, "--minority-classes", "2,4,6").returncode == 0
    default, chosen = tmp_path / "digits" / "ir10_val10", tmp_path / "digits" / "ir10_val10_min2-4-6"
    assert '"minority_set": "min2-4-6"' in (chosen / "run0" / "unsup0" / "random" / "metrics.jsonl").read_text()
    protocol = json.loads((chosen / "run0" / "protocol.json").read_text())
    assert protocol["minority_classes"] == [2, 4, 6] and protocol["minority_set"] == "min2-4-6"
    assert json.loads((default / "run0" / "protocol.json").read_text())["minority_classes"] == [5, 6, 7, 8, 9]
    assert '"minority_set": ""' in (default / "run0" / "unsup0" / "random" / "metrics.jsonl").read_text()


def test_the_order_of_chosen_minority_classes_names_no_new_protocol():
    """6,4,2 and 2,4,6 are one minority set: one folder, one split (they used to be two)."""
    spec = DATASETS.get("digits")
    found = [protocols(parse(["--minority-classes", order]), spec) for order in ("6,4,2", "2,4,6")]
    assert found[0] == found[1]
    assert {(p.minority_classes, p.minority_set) for _, p in found[0]} == {((2, 4, 6), "min2-4-6")}
