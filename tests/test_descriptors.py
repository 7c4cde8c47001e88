"""Stage 2 (docs/method.md#descriptors): descriptor layout, block normalisation, z and g, pseudo-labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.gen_descr import (
    DescriptorLayout, Reference, block_normalise, compute_descriptors, descriptor_layout, pool_spatial,
)
from mnist.lenet import LENET_DESCRIPTOR_LAYERS, LeNet


@pytest.fixture(scope="module")
def model() -> LeNet:
    """A randomly initialised LeNet (seeded)."""
    torch.manual_seed(0)
    return LeNet().eval()


@pytest.fixture(scope="module")
def trained_model(digits_data, digits_spec) -> LeNet:
    """A LeNet trained for a few steps on digits so its predictions are not all one class."""
    torch.manual_seed(1)
    net = LeNet()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.5)
    x = digits_spec.normalise(digits_data.train.images[:400])
    y = digits_data.train.labels[:400]
    net.train()
    for _ in range(3):
        for start in range(0, 400, 25):
            loss = F.cross_entropy(net(x[start : start + 25]), y[start : start + 25])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval()


def sample(digits_spec, digits_data):
    return digits_spec.normalise(digits_data.train.images[:1])


def test_layout_l80(model, digits_spec, digits_data):
    layout = descriptor_layout(model, LENET_DESCRIPTOR_LAYERS["l80"], sample(digits_spec, digits_data))
    assert layout.layers == ("conv1", "conv2", "fc1")
    assert layout.sizes == (10, 20, 50)
    assert layout.length == 80
    assert layout.blocks == [(0, 10), (10, 30), (30, 80)]


def test_layout_l20(model, digits_spec, digits_data):
    layout = descriptor_layout(model, LENET_DESCRIPTOR_LAYERS["l20"], sample(digits_spec, digits_data))
    assert layout.sizes == (20,)
    assert layout.length == 20
    assert layout.blocks == [(0, 20)]


def test_layout_unknown_layer_is_user_error(model, digits_spec, digits_data):
    with pytest.raises(UserError):
        descriptor_layout(model, ("conv1", "no_such_layer"), sample(digits_spec, digits_data))


def test_pool_spatial_any_shape():
    activation = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    np.testing.assert_allclose(pool_spatial(activation).numpy(), activation.mean(dim=(2, 3)).numpy())
    flat = torch.randn(4, 7)
    assert torch.equal(pool_spatial(flat), flat)
    volume = torch.ones(2, 3, 2, 3, 4)
    volume[:, 1] = 2.0
    np.testing.assert_allclose(pool_spatial(volume).numpy(), np.array([[1.0, 2.0, 1.0]] * 2))


def test_block_normalise_zero_mean_unit_std_per_block():
    layout = DescriptorLayout(layers=("a", "b", "c"), sizes=(10, 20, 50))
    vectors = torch.randn(6, 80, dtype=torch.float64) * torch.linspace(0.1, 30, 80, dtype=torch.float64) + 5.0
    normalised = block_normalise(vectors, layout)
    for start, end in layout.blocks:
        block = normalised[:, start:end].numpy()
        np.testing.assert_allclose(block.mean(axis=1), 0.0, atol=1e-9)
        np.testing.assert_allclose(block.std(axis=1), 1.0, atol=1e-9)  # population std (ddof 0)
    np.testing.assert_allclose((normalised * normalised).sum(dim=1).numpy(), 80.0, rtol=1e-9)


def test_block_normalise_dot_is_weighted_sum_of_pearson_correlations():
    layout = DescriptorLayout(layers=("a", "b"), sizes=(4, 6))
    x, y = torch.randn(1, 10, dtype=torch.float64), torch.randn(1, 10, dtype=torch.float64)
    dot = float((block_normalise(x, layout) * block_normalise(y, layout)).sum())
    expected = sum(
        (end - start) * np.corrcoef(x[0, start:end].numpy(), y[0, start:end].numpy())[0, 1]
        for start, end in layout.blocks
    )
    assert dot == pytest.approx(expected, rel=1e-9)


def test_block_normalise_constant_block_gives_zeros():
    layout = DescriptorLayout(layers=("a", "b"), sizes=(3, 2))
    vectors = torch.tensor([[2.0, 2.0, 2.0, 1.0, 3.0]])
    normalised = block_normalise(vectors, layout)
    assert torch.isfinite(normalised).all()
    np.testing.assert_allclose(normalised[0, :3].numpy(), 0.0)
    np.testing.assert_allclose(normalised[0, 3:].numpy(), [-1.0, 1.0], rtol=1e-6)


def _numpy_block_normalise(vector: np.ndarray, blocks) -> np.ndarray:
    out = []
    for start, end in blocks:
        block = vector[start:end] - vector[start:end].mean()
        out.append(block / (block.std() + 1e-10))
    return np.concatenate(out)


@pytest.mark.parametrize("label_shift", [0, 3])
def test_z_and_g_equal_independent_autograd_on_single_images(trained_model, digits_spec, digits_data, label_shift):
    """Split LeNet by hand, differentiate CE w.r.t. each stage's output, pool, normalise, compare.

    label_shift 3 makes g's label differ from the model's prediction, so a g taken against the
    argmax instead of the given label would not match."""
    net = trained_model
    images = digits_data.train.images[500:512]
    labels = (digits_data.train.labels[500:512] + label_shift) % 10
    layout = descriptor_layout(net, LENET_DESCRIPTOR_LAYERS["l80"], sample(digits_spec, digits_data))
    result = compute_descriptors(
        net, images, digits_spec.normalise, layout, torch.device("cpu"), pseudo_label="true", true_labels=labels,
        batch_size=5,
    )
    np.testing.assert_array_equal(result.labels, labels.numpy())
    for i in [0, 4, 7, 11]:
        x = digits_spec.normalise(images[i : i + 1])
        a1 = net.conv1(x)
        a2 = net.conv2(a1)
        a3 = net.fc1(a2)
        logits = net.fc2(a3)
        loss = F.cross_entropy(logits, labels[i : i + 1])
        g1, g2, g3 = torch.autograd.grad(loss, [a1, a2, a3])
        z = np.concatenate([a1.mean(dim=(2, 3))[0].detach().numpy(), a2.mean(dim=(2, 3))[0].detach().numpy(),
                            a3[0].detach().numpy()]).astype(np.float64)
        g = np.concatenate([g1.mean(dim=(2, 3))[0].numpy(), g2.mean(dim=(2, 3))[0].numpy(), g3[0].numpy()])
        np.testing.assert_allclose(result.logits[i], logits[0].detach().numpy(), atol=1e-5)
        np.testing.assert_allclose(result.z[i], _numpy_block_normalise(z, layout.blocks), atol=1e-4)
        np.testing.assert_allclose(result.g[i], _numpy_block_normalise(g.astype(np.float64), layout.blocks), atol=1e-4)


def test_features_only_has_no_gradients(model, digits_spec, digits_data):
    layout = descriptor_layout(model, LENET_DESCRIPTOR_LAYERS["l80"], sample(digits_spec, digits_data))
    result = compute_descriptors(
        model, digits_data.train.images[:9], digits_spec.normalise, layout, torch.device("cpu"), pseudo_label=None,
    )
    assert result.g is None and result.labels is None
    assert result.z.shape == (9, 80) and result.logits.shape == (9, 10)
    np.testing.assert_array_equal(result.vectors(False), result.z)


def test_descriptors_do_not_depend_on_batch_size(trained_model, digits_spec, digits_data):
    net = trained_model
    images, labels = digits_data.train.images[:40], digits_data.train.labels[:40]
    layout = descriptor_layout(net, LENET_DESCRIPTOR_LAYERS["l80"], sample(digits_spec, digits_data))
    results = [
        compute_descriptors(net, images, digits_spec.normalise, layout, torch.device("cpu"), pseudo_label="true",
                            true_labels=labels, batch_size=size)
        for size in (1, 7, 64)
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other.z, results[0].z, atol=1e-5)
        np.testing.assert_allclose(other.g, results[0].g, atol=1e-5)
        np.testing.assert_allclose(other.logits, results[0].logits, atol=1e-5)
    assert results[0].z.shape == (40, 80) and results[0].g.shape == (40, 80)
    assert results[0].vectors(True).shape == (40, 160)


def test_descriptors_in_eval_mode_even_with_mc_dropout(digits_spec, digits_data):
    torch.manual_seed(0)
    net = LeNet(mc_dropout=True).train()
    images, labels = digits_data.train.images[:10], digits_data.train.labels[:10]
    layout = descriptor_layout(net, LENET_DESCRIPTOR_LAYERS["l80"], sample(digits_spec, digits_data))
    net.train()
    runs = [compute_descriptors(net, images, digits_spec.normalise, layout, torch.device("cpu"), pseudo_label="true",
                                true_labels=labels) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].g, runs[1].g)
    np.testing.assert_array_equal(runs[0].z, runs[1].z)


@pytest.fixture(scope="module")
def reference_and_layout(trained_model, digits_spec, digits_data):
    layout = descriptor_layout(trained_model, LENET_DESCRIPTOR_LAYERS["l80"], sample(digits_spec, digits_data))
    val_images, val_labels = digits_data.train.images[600:700], digits_data.train.labels[600:700]
    val = compute_descriptors(trained_model, val_images, digits_spec.normalise, layout, torch.device("cpu"),
                              pseudo_label="true", true_labels=val_labels)
    return Reference(val.z, val.g, val_labels.numpy()), layout


def _pool(trained_model, digits_spec, digits_data, layout, pseudo_label, reference=None, true_labels=None):
    return compute_descriptors(
        trained_model, digits_data.train.images[:80], digits_spec.normalise, layout, torch.device("cpu"),
        pseudo_label=pseudo_label, reference=reference, true_labels=true_labels, batch_size=32,
    )


def test_pseudo_label_pred_is_argmax(trained_model, digits_spec, digits_data, reference_and_layout):
    _, layout = reference_and_layout
    pool = _pool(trained_model, digits_spec, digits_data, layout, "pred")
    np.testing.assert_array_equal(pool.labels, pool.logits.argmax(axis=1))
    assert len(np.unique(pool.labels)) > 1


def test_pseudo_label_nn_is_label_of_most_similar_validation_z(trained_model, digits_spec, digits_data,
                                                               reference_and_layout):
    reference, layout = reference_and_layout
    pool = _pool(trained_model, digits_spec, digits_data, layout, "nn", reference=reference)
    expected = reference.labels[np.argmax(pool.z @ reference.z.T, axis=1)]
    np.testing.assert_array_equal(pool.labels, expected)
    # and g is the gradient for exactly those labels
    with_true = _pool(trained_model, digits_spec, digits_data, layout, "true", true_labels=torch.from_numpy(expected))
    np.testing.assert_allclose(pool.g, with_true.g, atol=1e-6)


def test_pseudo_label_nn_grad_uses_z_and_predicted_g(trained_model, digits_spec, digits_data, reference_and_layout):
    reference, layout = reference_and_layout
    pool = _pool(trained_model, digits_spec, digits_data, layout, "nn-grad", reference=reference)
    predicted = _pool(trained_model, digits_spec, digits_data, layout, "pred")
    queries = np.concatenate([predicted.z, predicted.g], axis=1)
    keys = np.concatenate([reference.z, reference.g], axis=1)
    np.testing.assert_array_equal(pool.labels, reference.labels[np.argmax(queries @ keys.T, axis=1)])


def test_pseudo_label_true_is_oracle(trained_model, digits_spec, digits_data, reference_and_layout):
    _, layout = reference_and_layout
    truth = digits_data.train.labels[:80]
    pool = _pool(trained_model, digits_spec, digits_data, layout, "true", true_labels=truth)
    np.testing.assert_array_equal(pool.labels, truth.numpy())
