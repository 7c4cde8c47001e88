"""Data protocol (docs/method.md#data-protocol) and optimiser schedules (docs/method.md#training-schedules)."""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserError
from common.schedule import Schedule
from common.splits import default_minority_classes, make_split


def synthetic_labels(per_class: int = 50, classes: int = 10, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def split(labels, val_per_class=5, imbalance=10.0, minority=(5, 6, 7, 8, 9), seed=0, classes=10):
    return make_split(labels, classes, val_per_class, imbalance, minority, np.random.default_rng(seed))


def test_default_minority_classes_are_the_upper_half():
    assert default_minority_classes(10) == (5, 6, 7, 8, 9)
    assert default_minority_classes(4) == (2, 3)


def test_validation_is_class_balanced():
    labels = synthetic_labels()
    result = split(labels, val_per_class=7)
    assert len(result.val_indices) == 70
    np.testing.assert_array_equal(np.bincount(labels[result.val_indices], minlength=10), [7] * 10)
    assert np.all(np.diff(result.val_indices) > 0)


def test_imbalance_subsamples_minority_jointly_and_keeps_majority():
    labels = synthetic_labels()
    result = split(labels, val_per_class=5, imbalance=10)
    pool_labels = labels[result.pool_indices]
    counts = np.bincount(pool_labels, minlength=10)
    np.testing.assert_array_equal(counts[:5], [45] * 5)  # majority intact: 50 - 5 validation each
    assert counts[5:].sum() == 225 // 10  # floor(N_majority / ir)
    # every majority image that is not in validation is in the pool
    majority = np.flatnonzero(labels < 5)
    np.testing.assert_array_equal(np.setdiff1d(majority, result.val_indices), result.pool_indices[pool_labels < 5])
    assert np.all(np.diff(result.pool_indices) > 0)


@pytest.mark.parametrize("imbalance, expected", [(3.7, 60), (100, 2), (1000, 0), (1.5, 150)])
def test_minority_count_is_floor_of_majority_over_ir(imbalance, expected):
    labels = synthetic_labels()
    result = split(labels, val_per_class=5, imbalance=imbalance)
    assert (labels[result.pool_indices] >= 5).sum() == min(expected, 225)
    assert (labels[result.pool_indices] < 5).sum() == 225


def test_ir_one_keeps_everything():
    labels = synthetic_labels()
    result = split(labels, val_per_class=5, imbalance=1)
    assert len(result.pool_indices) == 450
    np.testing.assert_array_equal(np.sort(np.concatenate([result.val_indices, result.pool_indices])), np.arange(500))


def test_custom_minority_classes():
    labels = synthetic_labels()
    result = split(labels, val_per_class=5, imbalance=4, minority=(0, 9))
    counts = np.bincount(labels[result.pool_indices], minlength=10)
    np.testing.assert_array_equal(counts[1:9], [45] * 8)
    assert counts[0] + counts[9] == (45 * 8) // 4


def test_val_and_pool_disjoint():
    labels = synthetic_labels()
    for imbalance in (1, 10):
        result = split(labels, imbalance=imbalance)
        assert len(np.intersect1d(result.val_indices, result.pool_indices)) == 0


def test_same_seed_same_split_different_seed_different():
    labels = synthetic_labels()
    first, again, other = split(labels, seed=3), split(labels, seed=3), split(labels, seed=4)
    np.testing.assert_array_equal(first.val_indices, again.val_indices)
    np.testing.assert_array_equal(first.pool_indices, again.pool_indices)
    assert not np.array_equal(first.val_indices, other.val_indices)
    assert not np.array_equal(first.pool_indices, other.pool_indices)


@pytest.mark.parametrize("kwargs", [
    dict(val_per_class=50),  # a class would have no pool image left
    dict(val_per_class=80),
    dict(val_per_class=-1),  # 0 is the cold start (no validation set; tests/test_cold_start.py)
    dict(minority=(10,)),
    dict(minority=(-1,)),
    dict(minority=tuple(range(10))),
    dict(imbalance=0.5),
])
def test_bad_inputs_raise_user_error(kwargs):
    with pytest.raises(UserError):
        split(synthetic_labels(), **kwargs)


def test_digits_split_sizes(digits_data):
    labels = digits_data.train.labels.numpy()
    result = split(labels, val_per_class=20, imbalance=10)
    majority = int(sum((labels == c).sum() - 20 for c in range(5)))
    assert len(result.val_indices) == 200
    assert len(result.pool_indices) == majority + majority // 10


# --- Schedule ---------------------------------------------------------------------------------

LENET = Schedule(lr=0.05, momentum=0.5, batch_size=25, epochs=50, milestones=(15, 30, 45))


def test_lr_at_step_decay():
    assert LENET.lr_at(0) == pytest.approx(0.05)
    assert LENET.lr_at(14) == pytest.approx(0.05)
    assert LENET.lr_at(15) == pytest.approx(0.005)
    assert LENET.lr_at(30) == pytest.approx(0.0005)
    assert LENET.lr_at(49) == pytest.approx(0.00005)


def test_lr_at_warmup():
    imagenet = Schedule(lr=0.1, momentum=0.9, batch_size=128, epochs=60, milestones=(30, 50, 57),
                        weight_decay=1e-4, warmup_epochs=5)
    assert imagenet.lr_at(0) == pytest.approx(0.02)
    assert imagenet.lr_at(4) == pytest.approx(0.1)
    assert imagenet.lr_at(5) == pytest.approx(0.1)
    assert imagenet.lr_at(29) == pytest.approx(0.1)
    assert imagenet.lr_at(30) == pytest.approx(0.01)
    assert imagenet.lr_at(57) == pytest.approx(0.0001)


def test_with_epochs_same_is_identity():
    assert LENET.with_epochs(50) == LENET


def test_with_epochs_scales_milestones():
    ten = LENET.with_epochs(10)
    assert ten.epochs == 10 and ten.milestones == (3, 6, 9)
    assert (ten.lr, ten.momentum, ten.batch_size) == (0.05, 0.5, 25)
    assert ten.lr_at(2) == pytest.approx(0.05) and ten.lr_at(3) == pytest.approx(0.005)
    assert ten.lr_at(9) == pytest.approx(0.00005)
    hundred = LENET.with_epochs(100)
    assert hundred.milestones == (30, 60, 90)


def test_with_epochs_one_epoch_trains_at_base_lr():
    one = LENET.with_epochs(1)
    assert one.epochs == 1
    assert one.lr_at(0) == pytest.approx(0.05)
    assert all(m >= 1 for m in one.milestones)


def test_with_epochs_shrinks_warmup():
    warm = Schedule(lr=0.1, momentum=0.9, batch_size=128, epochs=60, milestones=(30,), warmup_epochs=5)
    assert warm.with_epochs(3).warmup_epochs == 2
    assert warm.with_epochs(1).warmup_epochs == 0
    assert warm.with_epochs(1).lr_at(0) == pytest.approx(0.1)
