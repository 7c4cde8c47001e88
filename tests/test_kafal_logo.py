"""KAFAL's KSAS score and KCFU loss, and LoGo's cluster-then-entropy selection, on tiny hand-checked data."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from common.errors import UserError
from common.train import predict_logits
from federated.kafal import (
    balanced_softmax_ce, class_count_prior, compensatory_loss, inverse_frequency_weights, kcfu_loss, ksas_scores,
    mix_unlabelled, mixed_weights, mixup,
)
from federated.logo import LOCAL_ONLY_SCHEDULE, local_only_model, logo_select, predicted_class_embeddings

LN2, LN3 = math.log(2.0), math.log(3.0)


def random_logits(rows: int = 8, classes: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- KSAS

def test_count_prior_is_log_n_with_absent_classes_floored():
    prior = class_count_prior(torch.tensor([0.0, 1.0, math.e]), eps=1e-3)
    torch.testing.assert_close(prior, torch.tensor([math.log(1e-3), 0.0, 1.0], dtype=torch.float64))


def test_ksas_is_zero_for_identical_models_and_positive_when_they_differ():
    counts = torch.tensor([5.0, 1.0, 0.0, 20.0, 3.0])
    logits = random_logits()
    assert ksas_scores(logits, logits.clone(), counts).abs().max() < 1e-6
    assert (ksas_scores(logits, random_logits(seed=1), counts) > 1e-4).all()


def test_ksas_is_symmetric_in_local_and_global():
    counts = torch.tensor([5.0, 1.0, 2.0, 20.0, 3.0])
    local, global_ = random_logits(seed=2), random_logits(seed=3)
    assert torch.equal(ksas_scores(local, global_, counts), ksas_scores(global_, local, counts))


def test_ksas_is_finite_when_a_class_is_absent():
    scores = ksas_scores(random_logits(seed=4) * 30, random_logits(seed=5) * 30, torch.tensor([0, 0, 4, 0, 1]))
    assert torch.isfinite(scores).all() and (scores >= 0).all()


def test_ksas_equals_a_hand_computation():
    # counts [1, 2, 1] -> log n = [0, ln 2, 0]
    # local  [ln 2, 0, 0] + log n = [ln 2, ln 2, 0]    -> p_l = [2, 2, 1] / 5 = [0.4, 0.4, 0.2]
    # global [0, 0, ln 3] + log n = [0, ln 2, ln 3]    -> p_g = [1, 2, 3] / 6
    # 1/2 sum_c (p_g - p_l) ln(p_g / p_l)
    #   = 1/2 [(-0.23333)(-0.87547) + (-0.06667)(-0.18232) + (0.3)(0.91629)] = 0.245659
    score = ksas_scores(torch.tensor([[LN2, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, LN3]]), torch.tensor([1, 2, 1]))
    assert score.item() == pytest.approx(0.2456590144, abs=1e-6)


# ---------------------------------------------------------------- KCFU

def test_balanced_softmax_ce_equals_a_hand_computation():
    # counts [1, 1, 2] -> log n = [0, 0, ln 2]; both images have logits [ln 2, 0, 0]
    # adjusted [ln 2, 0, ln 2] -> softmax [2, 1, 2] / 5 = [0.4, 0.2, 0.4]
    # label 0: -ln 0.4 = 0.916291; label 1: -ln 0.2 = 1.609438; mean 1.262864
    logits = torch.tensor([[LN2, 0.0, 0.0], [LN2, 0.0, 0.0]])
    loss = balanced_softmax_ce(logits, torch.tensor([0, 1]), torch.tensor([1, 1, 2]))
    assert loss.item() == pytest.approx(1.2628643, abs=1e-6)


def test_balanced_softmax_ce_is_finite_with_an_absent_class():
    logits = random_logits(rows=4, classes=3, seed=6).float().requires_grad_()
    loss = balanced_softmax_ce(logits, torch.tensor([0, 2, 2, 1]), torch.tensor([3, 0, 2]))  # even a label of class 1
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_inverse_frequency_weights_sum_to_one_over_present_classes_and_absent_ones_weigh_zero():
    # (sum n / n_c) for n = [1, 2, 4]: [7, 3.5, 1.75] -> normalised [4, 2, 1] / 7
    torch.testing.assert_close(inverse_frequency_weights(torch.tensor([1, 2, 4])),
                               torch.tensor([4 / 7, 2 / 7, 1 / 7], dtype=torch.float64))
    # KAFAL: counts [20, 5, 0 x 8] -> 1/20 and 1/5 normalised over the two present classes; the others 0
    weights = inverse_frequency_weights(torch.tensor([20, 5] + [0] * 8))
    torch.testing.assert_close(weights, torch.tensor([0.2, 0.8] + [0.0] * 8, dtype=torch.float64))
    assert torch.equal(inverse_frequency_weights(torch.zeros(4)), torch.zeros(4, dtype=torch.float64))


def hand_mixed_batch():
    """x0 = [1, 0], x1 = [0, 1]; lam = [0.7, 0.9]; each the other's partner -> [[0.7, 0.3], [0.1, 0.9]]."""
    return mixup(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64), torch.tensor([0.7, 0.9]),
                 torch.tensor([1, 0]))


def test_compensatory_term_equals_a_hand_computation():
    mixed = hand_mixed_batch()
    torch.testing.assert_close(mixed.inputs, torch.tensor([[0.7, 0.3], [0.1, 0.9]], dtype=torch.float64))
    # local f(x) = x swapped, global f(x) = 2x: the two models disagree on both images' class
    local_logits, global_logits = mixed.inputs.flip(1), 2.0 * mixed.inputs
    # image 0: p_l = softmax[0.3, 0.7] = [0.401312, 0.598688], p_g = softmax[1.4, 0.6] = [0.689974, 0.310026]
    #          KL(p_g || p_l) = 0.689974 ln(0.689974/0.401312) + 0.310026 ln(0.310026/0.598688) = 0.169884
    #          global predicts class 0
    # image 1: p_l = softmax[0.9, 0.1] = [0.689974, 0.310026], p_g = softmax[0.2, 1.8] = [0.167982, 0.832018]
    #          KL = 0.167982 ln(0.167982/0.689974) + 0.832018 ln(0.832018/0.310026) = 0.584044
    #          global predicts class 1
    # counts [3, 1]: sum n / n_c = [4/3, 4] -> r = [0.25, 0.75]
    # lambda-mixed weights, the partner's class as the global model predicts it on the partner's mixed image:
    #   w0 = 0.7 r[0] + 0.3 r[1] = 0.4, w1 = 0.9 r[1] + 0.1 r[0] = 0.7
    # KL averaged over the C = 2 classes, then the mean over images:
    #   (0.4 * 0.169884 / 2 + 0.7 * 0.584044 / 2) / 2 = 0.119196
    loss = compensatory_loss(local_logits, global_logits, torch.tensor([3, 1]), mixed)
    assert loss.item() == pytest.approx(0.1191961050, abs=1e-7)


def test_a_mixed_image_of_absent_classes_only_weighs_nothing():
    """Both the image and its partner predicted as a class the client has no label of: weight exactly 0."""
    mixed = hand_mixed_batch()
    weights = mixed_weights(inverse_frequency_weights(torch.tensor([3, 0])), torch.tensor([1, 1]), mixed)
    assert torch.equal(weights, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(mixed_weights(inverse_frequency_weights(torch.tensor([3, 0])), torch.tensor([0, 1]),
                                             mixed), torch.tensor([0.7, 0.1], dtype=torch.float64))


def test_compensatory_term_teaches_only_the_local_model():
    local_logits = random_logits(seed=7).requires_grad_()
    global_logits = random_logits(seed=8).requires_grad_()
    mixed = mix_unlabelled(torch.zeros(len(local_logits), 2), torch.Generator().manual_seed(0))
    compensatory_loss(local_logits, global_logits, torch.tensor([5, 1, 0, 2, 9]), mixed).backward()
    assert global_logits.grad is None and local_logits.grad.abs().sum() > 0


def test_kcfu_is_balanced_ce_alone_then_adds_the_compensatory_term():
    labelled, labels, counts = random_logits(rows=4, seed=9), torch.tensor([0, 1, 1, 3]), torch.tensor([1, 2, 0, 1, 0])
    local_mixed, global_mixed = random_logits(seed=10), random_logits(seed=11)
    mixed = mix_unlabelled(torch.zeros(len(local_mixed), 2), torch.Generator().manual_seed(0))
    first_round = kcfu_loss(labelled, labels, counts)
    assert torch.equal(first_round, balanced_softmax_ce(labelled, labels, counts))
    later = kcfu_loss(labelled, labels, counts, local_mixed, global_mixed, mixed)
    torch.testing.assert_close(later, first_round + compensatory_loss(local_mixed, global_mixed, counts, mixed))
    with pytest.raises(ValueError):
        kcfu_loss(labelled, labels, counts, local_mixed, global_mixed)


@pytest.mark.parametrize("count", [2, 3, 7, 64])
def test_every_mixed_image_has_another_image_as_partner(count):
    for seed in range(10):
        mixed = mix_unlabelled(torch.zeros(count, 1, 2, 2), torch.Generator().manual_seed(seed))
        assert (mixed.partner != torch.arange(count)).all()
        assert sorted(mixed.partner.tolist()) == list(range(count))  # every image is someone's partner once


def test_a_single_image_is_mixed_with_itself():
    mixed = mix_unlabelled(torch.ones(1, 3), torch.Generator().manual_seed(0))
    assert mixed.partner.tolist() == [0]
    torch.testing.assert_close(mixed.inputs, torch.ones(1, 3))


def test_mixed_inputs_follow_their_lambda_and_partner_and_are_seeded():
    images = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    mixed = mix_unlabelled(images, torch.Generator().manual_seed(5))
    expected = torch.stack([lam * images[i] + (1 - lam) * images[mixed.partner[i]] for i, lam in enumerate(mixed.lam)])
    torch.testing.assert_close(mixed.inputs, expected)
    again, other = (mix_unlabelled(images, torch.Generator().manual_seed(s)) for s in (5, 6))
    assert torch.equal(again.inputs, mixed.inputs) and not torch.equal(other.inputs, mixed.inputs)


def test_lambda_follows_beta_2_2():
    lam = mix_unlabelled(torch.zeros(20000, 1), torch.Generator().manual_seed(0)).lam
    assert ((lam > 0) & (lam < 1)).all()
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.var().item() == pytest.approx(0.05, abs=0.003)  # Beta(2, 2): 1/20 (uniform would give 1/12)
    assert (lam < 0.1).float().mean().item() == pytest.approx(0.028, abs=0.006)  # 3(0.1)^2 - 2(0.1)^3


# ---------------------------------------------------------------- LoGo

def planted_blobs(seed: int, per_blob: int = 20):
    """Three well-separated gaussian blobs in 2-D (one at the origin) and random entropies."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    points = np.concatenate([centre + rng.normal(size=(per_blob, 2)) for centre in centres])
    return points, rng.random(len(points))


@pytest.mark.parametrize("seed", range(10))
def test_logo_picks_the_most_uncertain_image_of_each_blob(seed):
    points, entropy = planted_blobs(seed)
    chosen = logo_select(points, entropy, 3, np.random.default_rng(seed))
    expected = [blob * 20 + int(np.argmax(entropy[blob * 20 : (blob + 1) * 20])) for blob in range(3)]
    assert sorted(chosen.tolist()) == expected


def test_logo_fills_the_budget_round_robin_over_the_clusters():
    """Two distinct points for six clusters: each cluster's top row (by entropy, 7 then 1), then the next row
    of each cluster in the same order (8, 4), and again (6, 3), as the reference tops up."""
    points = np.repeat(np.array([[0.0, 10.0], [10.0, 0.0]]), 5, axis=0)  # rows 0-4 one point, rows 5-9 another
    entropy = np.array([0.1, 0.9, 0.2, 0.3, 0.4, 0.5, 0.6, 0.95, 0.7, 0.05])
    with pytest.warns(Warning):  # scikit-learn: fewer distinct points than clusters
        chosen = logo_select(points, entropy, 6, np.random.default_rng(0))
    assert chosen.tolist() == [7, 1, 8, 4, 6, 3]


def test_logo_budget_bounds():
    points, entropy = planted_blobs(0, per_blob=2)
    everything = logo_select(points, entropy, 6, np.random.default_rng(0))
    assert sorted(everything.tolist()) == list(range(6))
    assert len(logo_select(points, entropy, 0, np.random.default_rng(0))) == 0
    with pytest.raises(UserError, match="budget"):
        logo_select(points, entropy, 7, np.random.default_rng(0))


def test_logo_embedding_is_badges_predicted_class_block():
    """(p_y - 1) h: the gradient of CE at the predicted class y wrt the last layer's row y."""
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    scales = probs - np.eye(3)[probs.argmax(axis=1)]
    features = np.array([[1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_allclose(predicted_class_embeddings(scales, features), [[-0.3, -0.6], [-1.2, 0.4]])


def test_logo_local_only_model_starts_fresh_and_learns_only_the_clients_labels(digits_spec, digits_data):
    """The same fresh weights for every client of a cycle (never the global model's), other ones next cycle;
    trained on the client's own labelled images until 99 % of them are right."""
    images, labels = digits_data.train.images[:40], digits_data.train.labels[:40]
    cpu = torch.device("cpu")
    untrained = [local_only_model(digits_spec, images[:0], labels[:0], 0, cycle, client, cpu).state_dict()
                 for cycle, client in ((1, 0), (1, 1), (2, 0))]
    assert all(torch.equal(untrained[0][k], untrained[1][k]) for k in untrained[0])
    assert not all(torch.equal(untrained[0][k], untrained[2][k]) for k in untrained[0])
    trained = local_only_model(digits_spec, images, labels, 0, 1, 0, cpu)
    predicted = predict_logits(trained, images, digits_spec.normalise, cpu).argmax(dim=1)
    assert (predicted == labels).float().mean().item() >= 0.99
    assert not all(torch.equal(trained.state_dict()[k], untrained[0][k]) for k in untrained[0])
    one_epoch = local_only_model(digits_spec, images, labels, 0, 1, 0, cpu, replace(LOCAL_ONLY_SCHEDULE, epochs=1))
    assert not all(torch.equal(one_epoch.state_dict()[k], trained.state_dict()[k]) for k in untrained[0])
