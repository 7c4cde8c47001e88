"""Training, evaluation, rotation pretraining helpers and seeding (docs/method.md#data-protocol)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.schedule import Schedule
from common.seeding import numpy_rng, torch_global_seed, torch_seed
from common.train import accuracy_report, batches, mc_dropout_probabilities, predict_probabilities, train_model
from common.unsup import rotate_batch, transfer_weights
from mnist.lenet import LeNet

CPU = torch.device("cpu")
TINY = Schedule(lr=0.05, momentum=0.5, batch_size=25, epochs=2, milestones=(1,))


def test_accuracy_report_known_answer():
    truth = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    predicted = np.array([0, 1, 1, 1, 0, 2, 0, 0])
    report = accuracy_report(predicted, truth, num_classes=5, minority_classes=(2, 3, 4))
    assert report["test_acc"] == pytest.approx(4 / 8)
    assert report["class_acc"][:4] == pytest.approx([0.5, 2 / 3, 0.5, 0.0])
    assert report["class_acc"][4] is None  # class 4 absent from the test split
    assert report["balanced_acc"] == pytest.approx((0.5 + 2 / 3 + 0.5 + 0.0) / 4)
    assert report["minority_acc"] == pytest.approx((0.5 + 0.0) / 2)


def test_batches_cover_range():
    assert list(batches(7, 3)) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert list(batches(0, 3)) == []


def test_train_model_is_seeded_and_learns(digits_data, digits_spec):
    images, labels = digits_data.train.images[:100], digits_data.train.labels[:100]
    states = []
    for seed in (3, 3, 4):
        torch.manual_seed(0)
        model = LeNet()
        train_model(model, images, labels, TINY, digits_spec.normalise, seed, CPU)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(states[0]["conv1.0.weight"], states[2]["conv1.0.weight"])


def test_train_model_reduces_training_loss(digits_data, digits_spec):
    images, labels = digits_data.train.images[:200], digits_data.train.labels[:200]
    torch.manual_seed(0)
    model = LeNet()

    def loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(model.eval()(digits_spec.normalise(images)), labels))

    before = loss()
    train_model(model, images, labels, Schedule(lr=0.05, momentum=0.5, batch_size=25, epochs=5, milestones=()),
                digits_spec.normalise, 0, CPU)
    assert loss() < 0.8 * before


def test_train_model_uses_the_schedule_lr(digits_data, digits_spec):
    images, labels = digits_data.train.images[:50], digits_data.train.labels[:50]
    torch.manual_seed(0)
    model = LeNet()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train_model(model, images, labels, Schedule(lr=0.0, momentum=0.5, batch_size=25, epochs=1, milestones=()),
                digits_spec.normalise, 0, CPU)
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())


def test_predict_probabilities_is_ensemble_mean(digits_data, digits_spec):
    images = digits_data.test.images[:12]
    torch.manual_seed(0)
    first, second = LeNet(), LeNet()
    mean = predict_probabilities([first, second], images, digits_spec.normalise, CPU)
    with torch.no_grad():
        each = [m.eval()(digits_spec.normalise(images)).softmax(dim=1) for m in (first, second)]
    torch.testing.assert_close(mean, (each[0] + each[1]) / 2)
    torch.testing.assert_close(mean.sum(dim=1), torch.ones(12))


def test_mc_dropout_probabilities(digits_data, digits_spec):
    images = digits_data.test.images[:8]
    torch.manual_seed(0)
    dropout_model, plain_model = LeNet(mc_dropout=True), LeNet(mc_dropout=False)
    samples = mc_dropout_probabilities([dropout_model, plain_model], images, digits_spec.normalise, CPU, 4, seed=9,
                                       batch_size=3)
    assert tuple(samples.shape) == (8, 8, 10)  # E*K = 2*4 passes, N = 8, C = 10
    assert not torch.allclose(samples[0], samples[1])  # dropout on: passes differ
    for k in range(5, 8):
        torch.testing.assert_close(samples[k], samples[4])  # no dropout layers: passes agree
    again = mc_dropout_probabilities([dropout_model, plain_model], images, digits_spec.normalise, CPU, 4, seed=9,
                                     batch_size=3)
    torch.testing.assert_close(samples, again, rtol=0, atol=0)
    assert not dropout_model.training  # left in eval mode


def test_rotate_batch():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    rotated, targets = rotate_batch(x)
    assert tuple(rotated.shape) == (8, 1, 3, 3)
    assert targets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(rotated[:2], x)
    assert torch.equal(rotated[2], torch.rot90(x[0], 1, dims=(1, 2)))
    assert torch.equal(rotated[5], torch.rot90(x[1], 2, dims=(1, 2)))
    assert torch.equal(rotated[6], torch.rot90(x[0], 3, dims=(1, 2)))


def test_transfer_weights_keeps_the_classifier():
    torch.manual_seed(0)
    pretrained = LeNet(4).state_dict()
    target = LeNet(10).state_dict()
    merged = transfer_weights(pretrained, target, "fc2")
    assert set(merged) == set(target)
    for key in merged:
        source = target if key.startswith("fc2.") else pretrained
        assert torch.equal(merged[key], source[key]), key
    LeNet(10).load_state_dict(merged)


def test_seeding_streams_are_reproducible_and_distinct():
    assert numpy_rng(3, "acquire", 1).random() == numpy_rng(3, "acquire", 1).random()
    draws = {numpy_rng(3, "acquire", 1).random(), numpy_rng(3, "acquire", 2).random(),
             numpy_rng(4, "acquire", 1).random(), numpy_rng(3, "split").random()}
    assert len(draws) == 4
    seed = torch_seed(7, "train", 0, 1)
    assert seed == torch_seed(7, "train", 0, 1) and 0 <= seed < 2**63
    assert seed != torch_seed(7, "train", 1, 1)


def test_torch_global_seed_restores_the_global_generator():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    with torch_global_seed(5):
        inside = torch.rand(1)
    assert torch.equal(torch.rand(1), expected)  # the outer stream continues as if untouched
    with torch_global_seed(5):
        assert torch.equal(torch.rand(1), inside)
    assert not math.isclose(float(inside), float(expected))
