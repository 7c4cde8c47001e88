"""Training same-shaped models as one vmapped model (common/batched_train.py) equals training them one by one."""
from __future__ import annotations

import copy

import numpy as np
import torch

from common.batched_train import can_train_together, train_together
from common.train import train_model
from mnist.lenet import LeNet
from svhn.resnet import ResNet10


def test_lenets_trained_together_equal_lenets_trained_one_by_one(digits_data, digits_spec):
    rng = np.random.default_rng(0)
    models, images, labels = [], [], []
    for member in range(4):
        torch.manual_seed(member)
        models.append(LeNet(10))
        rows = torch.from_numpy(rng.choice(len(digits_data.train), size=100, replace=False))
        images.append(digits_data.train.images[rows])
        labels.append(digits_data.train.labels[rows])
    schedule = digits_spec.schedule.with_epochs(3)
    alone = [copy.deepcopy(model) for model in models]
    for member, model in enumerate(alone):
        train_model(model, images[member], labels[member], schedule, digits_spec.normalise, 10 + member,
                    torch.device("cpu"))
    assert can_train_together(models, images, labels)
    train_together(models, images, labels, schedule, digits_spec.normalise, [10 + m for m in range(4)],
                   torch.device("cpu"))
    for one, together in zip(alone, models):
        for a, b in zip(one.parameters(), together.parameters()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(models[0].parameters(), models[1].parameters()))


def test_only_buffer_free_dropout_free_same_shaped_models_on_equal_label_counts_train_together():
    images, labels = [torch.zeros(5, 1, 28, 28, dtype=torch.uint8)] * 2, [torch.zeros(5, dtype=torch.int64)] * 2
    assert can_train_together([LeNet(10), LeNet(10)], images, labels)
    assert not can_train_together([LeNet(10), LeNet(10, mc_dropout=True)], images, labels)  # dropout masks
    assert not can_train_together([LeNet(10), LeNet(4)], images, labels)  # shapes differ
    assert not can_train_together([LeNet(10), LeNet(10)], images, [labels[0], labels[0][:4]])
    assert not can_train_together([ResNet10(10), ResNet10(10)], images, labels)  # BatchNorm buffers
