"""Federated FK acquisition: server centres, client candidates, server merge; with
every client's lists merged, the selection equals central FK's on the union of the pools."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.datasets import Split
from common.gen_descr import compute_descriptors, images_layout, validation_descriptors
from common.main_descr import fisher_kernel_acquire, match_pool, miss_set
from federated.fk import Candidates, Centres, client_candidates, local_top_k, merge_candidates, server_centres

CPU = torch.device("cpu")
POOL, BUDGET = 300, 20


@pytest.fixture(scope="module")
def setup(digits_data, digits_spec):
    """A seeded random LeNet, 300 digits pool images and 100 validation images."""
    torch.manual_seed(0)
    model = digits_spec.model(digits_spec.num_classes, False).eval()
    validation = Split(images=digits_data.train.images[300:400], labels=digits_data.train.labels[300:400])
    layers = digits_spec.descriptor_layers["l80"]
    return model, digits_data.train.images[:POOL], validation, digits_spec.normalise, layers


def centres_for(setup, with_gradients: bool, budget: int = BUDGET, seed: int = 0, model=None,
                validation=None) -> Centres:
    default_model, _, default_validation, to_input, layers = setup
    return server_centres(model or default_model, validation or default_validation, to_input, layers, CPU, budget,
                          np.random.default_rng(seed), with_gradients, batch_size=64)


def central_pool_vectors(setup, centres: Centres, pseudo_label: str | None) -> np.ndarray:
    """The whole pool described centrally, fk-nn's reference being the centres (as a client's is)."""
    model, pool, _, to_input, layers = setup
    layout = images_layout(model, layers, pool, to_input, CPU)
    reference = centres.reference() if pseudo_label else None
    return compute_descriptors(model, pool, to_input, layout, CPU, pseudo_label, reference=reference, batch_size=64,
                               keep_logits=False).vectors(pseudo_label is not None)


def central_selection(setup, pool_vectors: np.ndarray, with_gradients: bool, top_k: int, seed: int = 0) -> list[int]:
    """Central FK from the validation set up: its own miss set and centres (same seed), then matching."""
    model, _, validation, to_input, layers = setup
    layout = images_layout(model, layers, validation.images, to_input, CPU)
    val = validation_descriptors(model, validation, to_input, layout, CPU, with_gradients, batch_size=64)
    misses = miss_set(val.logits, validation.labels.numpy(), fallback_size=BUDGET)
    return fisher_kernel_acquire(val.vectors(with_gradients), misses, pool_vectors, BUDGET, top_k,
                                 np.random.default_rng(seed)).tolist()


def federated_selection(setup, parts: list[np.ndarray], centres: Centres, pseudo_label: str | None,
                        top_k: int) -> list[int]:
    """Clients (ids 10, 20, ...) hold the pool rows `parts`; K doubles until the merge fills the budget,
    as central matching does. The chosen pairs are mapped back to pool rows."""
    model, pool, _, to_input, layers = setup
    while True:
        replies = {10 * (i + 1): client_candidates(model, pool[rows], to_input, layers, CPU, centres, top_k,
                                                   pseudo_label, batch_size=50) for i, rows in enumerate(parts)}
        pairs, filled = merge_candidates(replies, BUDGET)
        if filled or all(reply.lists_whole_pool for reply in replies.values()):
            return [int(parts[client // 10 - 1][local]) for client, local in pairs]
        top_k *= 2


@pytest.mark.parametrize("pseudo_label", [None, "nn"])
@pytest.mark.parametrize("top_k", [1, 8])  # K=1 cannot fill 20 from 20 centres' lists: K doubles
def test_one_client_with_the_whole_pool_selects_as_central(setup, pseudo_label, top_k):
    centres = centres_for(setup, with_gradients=pseudo_label is not None)
    pool_vectors = central_pool_vectors(setup, centres, pseudo_label)
    expected = central_selection(setup, pool_vectors, pseudo_label is not None, top_k)
    assert expected == match_pool(centres.vectors, pool_vectors, BUDGET, top_k).tolist()  # the same centres
    assert federated_selection(setup, [np.arange(POOL)], centres, pseudo_label, top_k) == expected


@pytest.mark.parametrize("pseudo_label", [None, "nn"])
@pytest.mark.parametrize(("split_seed", "top_k"), [(1, 1), (2, 4)])
def test_three_clients_select_the_central_rows_of_the_union(setup, pseudo_label, split_seed, top_k):
    centres = centres_for(setup, with_gradients=pseudo_label is not None)
    pool_vectors = central_pool_vectors(setup, centres, pseudo_label)
    expected = central_selection(setup, pool_vectors, pseudo_label is not None, top_k)
    shuffled = np.random.default_rng(split_seed).permutation(POOL)
    parts = np.split(shuffled, [40, 170])  # unequal clients, rows in shuffled order
    assert federated_selection(setup, parts, centres, pseudo_label, top_k) == expected


def test_fk_nn_pseudo_label_is_the_nearest_centres_label(setup):
    model, pool, _, to_input, layers = setup
    centres = centres_for(setup, with_gradients=True)
    layout = images_layout(model, layers, pool, to_input, CPU)
    described = compute_descriptors(model, pool, to_input, layout, CPU, "nn", reference=centres.reference(),
                                    batch_size=64, keep_logits=False)
    nearest = (described.z @ centres.z.T).argmax(axis=1)  # [U]
    np.testing.assert_array_equal(described.labels, centres.labels[nearest])


# --- centres -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_gradients", [False, True])
def test_centres_with_more_misses_than_budget_are_budget_misclassified_images(setup, with_gradients):
    model, _, validation, to_input, layers = setup
    layout = images_layout(model, layers, validation.images, to_input, CPU)
    val = validation_descriptors(model, validation, to_input, layout, CPU, with_gradients, batch_size=64)
    labels = validation.labels.numpy()
    misses = np.flatnonzero(val.logits.argmax(axis=1) != labels)
    assert len(misses) > BUDGET
    centres = centres_for(setup, with_gradients)
    assert len(centres) == BUDGET and centres.with_gradients == with_gradients
    rows = [int(np.flatnonzero((val.vectors(with_gradients) == vector).all(axis=1))[0]) for vector in centres.vectors]
    assert len(set(rows)) == BUDGET and set(rows) <= set(misses.tolist())
    np.testing.assert_array_equal(centres.labels, labels[rows])
    np.testing.assert_array_equal(centres.z, val.z[rows])
    assert centres.block_sizes.tolist() == [10, 20, 50]


def test_centres_without_a_miss_are_the_least_confident_images(setup, digits_data):
    model = setup[0].__class__().eval()
    model.load_state_dict(setup[0].state_dict())
    with torch.no_grad():
        model.fc2.bias[3] += 1000.0  # always predicts 3
    threes = torch.nonzero(digits_data.train.labels == 3).flatten()[:40]
    validation = Split(images=digits_data.train.images[threes], labels=digits_data.train.labels[threes])
    centres = centres_for(setup, with_gradients=False, budget=15, model=model, validation=validation)

    _, _, _, to_input, layers = setup
    layout = images_layout(model, layers, validation.images, to_input, CPU)
    val = validation_descriptors(model, validation, to_input, layout, CPU, False, batch_size=64)
    least_confident = miss_set(val.logits, validation.labels.numpy(), fallback_size=15)
    assert len(least_confident) == 15 and (val.logits.argmax(axis=1) == 3).all()
    np.testing.assert_array_equal(centres.vectors, val.z[least_confident])
    assert (centres.labels == 3).all()


# --- messages -------------------------------------------------------------------------------------------


def assert_same_message(first, second) -> None:
    assert type(first) is type(second)
    for name, array in first.to_arrays().items():
        np.testing.assert_array_equal(array, second.to_arrays()[name])
        assert array.dtype == second.to_arrays()[name].dtype


def test_messages_round_trip_and_a_reply_carries_only_ids_and_similarities(setup):
    model, pool, _, to_input, layers = setup
    centres = centres_for(setup, with_gradients=True)
    arrays = centres.to_arrays()
    assert set(arrays) == {"vectors", "labels", "block_sizes"}
    assert arrays["vectors"].shape == (BUDGET, 160) and arrays["vectors"].dtype == np.float32
    assert centres.nbytes == sum(array.nbytes for array in arrays.values())
    copied = Centres.from_arrays({name: array.copy() for name, array in arrays.items()})
    assert_same_message(centres, copied)
    np.testing.assert_array_equal(copied.g, centres.vectors[:, 80:])

    reply = client_candidates(model, pool[:50], to_input, layers, CPU, copied, top_k=6, pseudo_label="nn")
    arrays = reply.to_arrays()
    assert set(arrays) == {"ids", "similarities"}  # no descriptor leaves the client
    assert arrays["ids"].shape == arrays["similarities"].shape == (BUDGET, 6)
    assert arrays["ids"].dtype == np.int64 and arrays["similarities"].dtype == np.float32
    assert ((arrays["ids"] >= 0) & (arrays["ids"] < 50)).all()
    assert (np.diff(arrays["similarities"], axis=1) <= 0).all()
    assert_same_message(reply, Candidates.from_arrays(dict(arrays)))


def test_message_checks():
    with pytest.raises(ValueError):
        Centres(vectors=np.zeros((3, 7)), labels=np.zeros(3), block_sizes=np.array([2, 2]))  # width 7 is not 4 or 8
    with pytest.raises(ValueError):
        Candidates(ids=np.zeros((2, 3)), similarities=np.zeros((2, 4)))
    with pytest.raises(ValueError):
        Candidates.from_arrays({"ids": np.zeros((2, 3))})


def test_client_rejects_a_mismatched_pseudo_label_or_layout(setup):
    model, pool, _, to_input, layers = setup
    features_only = centres_for(setup, with_gradients=False)
    for pseudo_label in ("nn", "true", "cov"):
        with pytest.raises(ValueError):
            client_candidates(model, pool[:10], to_input, layers, CPU, features_only, 4, pseudo_label)
    with pytest.raises(ValueError):
        client_candidates(model, pool[:10], to_input, ("conv2",), CPU, features_only, 4, None)


def test_a_client_with_fewer_images_than_k_pads_its_lists():
    rng = np.random.default_rng(0)
    reply = local_top_k(rng.normal(size=(3, 5)), rng.normal(size=(2, 5)), top_k=4)
    assert reply.ids.shape == (3, 4) and reply.lists_whole_pool
    assert (reply.ids[:, 2:] == -1).all() and np.isneginf(reply.similarities[:, 2:]).all()
    assert sorted(reply.ids[0, :2].tolist()) == [0, 1]
    assert not local_top_k(rng.normal(size=(3, 5)), rng.normal(size=(9, 5)), top_k=4).lists_whole_pool


def test_a_client_with_no_unlabelled_image_answers_padding(setup):
    model, pool, _, to_input, layers = setup
    reply = client_candidates(model, pool[:0], to_input, layers, CPU, centres_for(setup, True), 4, "nn")
    assert reply.ids.shape == (BUDGET, 4) and (reply.ids == -1).all() and reply.lists_whole_pool


# --- merge ------------------------------------------------------------------------------------------------


def test_merge_is_rank_major_over_the_global_top_k():
    # centre 0: global order (1, 4) .9, (2, 7) .8, (1, 5) .3 | centre 1: (2, 7) .95, (2, 8) .6, (1, 4) .5
    replies = {
        2: Candidates(ids=[[7, 3], [7, 8]], similarities=[[0.8, 0.1], [0.95, 0.6]]),
        1: Candidates(ids=[[4, 5], [4, 6]], similarities=[[0.9, 0.3], [0.5, 0.2]]),
    }
    # top 2 per centre; 1st matches: (2, 7) .95, (1, 4) .9; 2nd: (2, 7) .8 (taken), (2, 8) .6
    assert merge_candidates(replies, 3) == ([(2, 7), (1, 4), (2, 8)], True)
    # (1, 5) and (1, 6) fall outside the global top 2, so at most 3 pairs: not filled
    assert merge_candidates(replies, 4) == ([(2, 7), (1, 4), (2, 8)], False)


def test_merge_breaks_ties_by_client_then_local_id():
    replies = {5: Candidates(ids=[[9, 2]], similarities=[[0.5, 0.5]]),
               3: Candidates(ids=[[4, 8]], similarities=[[0.5, 0.5]])}
    assert merge_candidates(replies, 2) == ([(3, 4), (3, 8)], True)
    assert merge_candidates(dict(reversed(replies.items())), 2) == ([(3, 4), (3, 8)], True)


def test_merge_fills_the_budget_with_distinct_pairs_and_skips_padding():
    rng = np.random.default_rng(0)
    replies = {client: local_top_k(rng.normal(size=(6, 4)), rng.normal(size=(size, 4)), top_k=5)
               for client, size in [(0, 30), (1, 3), (2, 12)]}
    pairs, filled = merge_candidates(replies, 20)
    assert filled and len(pairs) == 20 and len(set(pairs)) == 20
    sizes = {0: 30, 1: 3, 2: 12}
    assert all(0 <= local < sizes[client] for client, local in pairs)
    pairs, filled = merge_candidates(replies, 31)  # 6 centres x top 5 hold at most 30 pairs
    assert not filled and len(set(pairs)) == len(pairs) <= 30


def test_merge_needs_one_k_for_every_client():
    with pytest.raises(ValueError):
        merge_candidates({0: Candidates(ids=[[1]], similarities=[[0.1]]),
                          1: Candidates(ids=[[1, 2]], similarities=[[0.1, 0.0]])}, 1)
