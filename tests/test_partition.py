"""Non-IID client pools: coverage, seeding, sizes and label skew of each partition."""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserError
from common.partition import PartitionOptions, partition, partition_summary

COVERING = ["iid", "dirichlet", "pathological"]  # the partitions whose clients cover the whole pool


def pool_labels(per_class: int = 100, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class))


def split(name, labels, clients=10, seed=0, classes=10, **options):
    return partition(name, labels, classes, clients, np.random.default_rng(seed), PartitionOptions(**options))


def mean_top_class_share(name: str, alpha: float, seeds: int = 20) -> float:
    """Mean over clients and seeds of the client's largest class share (1 = a single class)."""
    labels = pool_labels(per_class=200)
    shares = []
    for seed in range(seeds):
        counts = partition_summary(split(name, labels, seed=seed, alpha=alpha), labels, 10)
        shares.extend(counts.max(axis=1) / counts.sum(axis=1))
    return float(np.mean(shares))


@pytest.mark.parametrize("name", COVERING)
def test_parts_are_sorted_disjoint_and_cover_the_pool(name):
    labels = pool_labels()
    parts = split(name, labels, min_size=5)
    assert len(parts) == 10
    assert all(part.dtype == np.int64 and np.all(np.diff(part) > 0) for part in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


def test_dirichlet_equal_gives_every_client_the_same_size_and_drops_the_remainder():
    labels = pool_labels()[:1003]  # 1003 // 10 = 100 each, 3 left over
    parts = split("dirichlet-equal", labels, alpha=0.1)
    assert [len(part) for part in parts] == [100] * 10
    union = np.concatenate(parts)
    assert len(np.unique(union)) == 1000 and union.min() >= 0 and union.max() < 1003
    assert all(np.all(np.diff(part) > 0) for part in parts)


def test_dirichlet_equal_renormalises_when_a_class_runs_out():
    labels = np.random.default_rng(1).permutation(np.r_[np.zeros(90, int), np.ones(10, int)])
    for seed in range(5):
        parts = split("dirichlet-equal", labels, seed=seed, classes=2, alpha=0.01)
        assert [len(part) for part in parts] == [10] * 10
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(100))


@pytest.mark.parametrize("name", COVERING + ["dirichlet-equal"])
def test_same_seed_same_parts_other_seed_other_parts(name):
    labels = pool_labels()
    first, again, other = (split(name, labels, seed=s, alpha=0.5, min_size=5) for s in (3, 3, 4))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_dirichlet_holds_the_minimum_client_size():
    labels = pool_labels(per_class=200)
    for seed in range(10):
        parts = split("dirichlet", labels, seed=seed, alpha=0.05, min_size=15)
        assert min(len(part) for part in parts) >= 15


def test_dirichlet_minimum_size_is_clamped_to_what_the_pool_allows():
    labels = pool_labels(per_class=2)  # 20 images, one client: min_size 100 becomes 20
    (only,) = split("dirichlet", labels, clients=1, min_size=100)
    np.testing.assert_array_equal(only, np.arange(20))


def test_dirichlet_out_of_reach_minimum_is_one_line_user_error():
    labels = np.zeros(100, dtype=int)  # one class: ten clients of exactly 10 each from Dirichlet(0.01)
    with pytest.raises(UserError, match="dirichlet partition") as raised:
        split("dirichlet", labels, classes=1, alpha=0.01, min_size=10)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("name", ["dirichlet", "dirichlet-equal"])
def test_label_skew_grows_as_alpha_falls(name):
    sharp, medium, flat = (mean_top_class_share(name, alpha) for alpha in (0.05, 1.0, 100.0))
    assert sharp > 0.6 and sharp > medium + 0.2 and medium > flat + 0.1
    assert flat < 0.2  # close to the 0.1 of a uniform class mix (plus sampling noise)


def test_iid_client_mixes_are_close_to_the_global_mix():
    labels = pool_labels(per_class=300)
    labels = labels[(labels < 5) | (np.arange(len(labels)) % 3 == 0)]  # biased: upper classes thinned
    counts = partition_summary(split("iid", labels, clients=4), labels, 10)
    global_mix = np.bincount(labels, minlength=10) / len(labels)
    np.testing.assert_allclose(counts / counts.sum(axis=1, keepdims=True), np.tile(global_mix, (4, 1)), atol=0.05)
    assert counts.sum(axis=1).max() - counts.sum(axis=1).min() <= 1


@pytest.mark.parametrize("clients, k", [(10, 2), (4, 3), (5, 2), (3, 10)])
def test_pathological_clients_hold_exactly_k_classes_and_every_class_is_used(clients, k):
    labels = pool_labels()
    counts = partition_summary(split("pathological", labels, clients=clients, classes_per_client=k), labels, 10)
    assert np.all((counts > 0).sum(axis=1) == k)
    assert np.all((counts > 0).sum(axis=0) >= 1)
    holders = (counts > 0).sum(axis=0)
    for cls in range(10):  # a class's images split near-equally among its holders
        shares = counts[:, cls][counts[:, cls] > 0]
        assert shares.max() - shares.min() <= 1 and shares.sum() == 100 and len(shares) == holders[cls]


def test_partition_summary_counts_by_hand():
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5])]
    np.testing.assert_array_equal(partition_summary(parts, labels, 4), [[1, 1, 0, 0], [0, 1, 3, 0]])


@pytest.mark.parametrize("name, clients, options, message", [
    ("dirichlet", 10, {"alpha": 0.0}, "alpha"),
    ("dirichlet-equal", 10, {"alpha": -1.0}, "alpha"),
    ("iid", 0, {}, "clients"),
    ("iid", 1001, {}, "clients"),
    ("dirichlet", 10, {"min_size": -1}, "minimum client size"),
    ("pathological", 10, {"classes_per_client": 0}, "pathological"),
    ("pathological", 10, {"classes_per_client": 11}, "pathological"),
    ("pathological", 4, {"classes_per_client": 2}, "pathological"),  # 4 x 2 < 10 classes
    ("quantity-skew", 10, {}, "unknown partition"),
])
def test_bad_inputs_are_one_line_user_errors(name, clients, options, message):
    with pytest.raises(UserError, match=message) as raised:
        split(name, pool_labels(), clients=clients, **options)
    assert "\n" not in str(raised.value)


def test_labels_outside_the_classes_are_a_user_error():
    with pytest.raises(UserError, match="labels"):
        split("iid", np.array([0, 1, 10]), clients=2)
