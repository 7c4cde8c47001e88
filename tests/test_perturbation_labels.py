"""fk-cov and fk-mi building blocks (issue 4): known statistics, finite scores, determinism."""
from __future__ import annotations

import math

import numpy as np
import torch

from common.gen_descr import (
    Perturbation, class_gradient_samples, cross_covariance_trace, gaussian_mutual_information, perturbed_views,
)
from mnist.lenet import LENET_DESCRIPTOR_LAYERS, LeNet


def test_cross_covariance_trace_matches_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(12, 3, 4))  # [K, B, L]
    g = rng.normal(size=(2, 12, 3, 4)) + 0.5 * z[None]  # [C, K, B, L]
    result = cross_covariance_trace(torch.from_numpy(z), torch.from_numpy(g)).numpy()
    for c in range(2):
        for b in range(3):
            expected = sum(np.cov(z[:, b, l], g[c, :, b, l])[0, 1] for l in range(4))
            assert math.isclose(result[c, b], expected, rel_tol=1e-9)


def test_mutual_information_matches_the_gaussian_formula():
    """1-D jointly Gaussian z, g with correlation rho: I = -0.5 log(1 - rho^2)."""
    rng = np.random.default_rng(1)
    samples = 1500
    for rho in (0.0, 0.6, 0.9):
        z = rng.normal(size=(samples, 1, 1))
        g = rho * z + math.sqrt(1 - rho**2) * rng.normal(size=(samples, 1, 1))
        mi = gaussian_mutual_information(torch.from_numpy(z), torch.from_numpy(g)[None], ridge=1e-6).item()
        assert abs(mi - (-0.5 * math.log(1 - rho**2))) < 0.06


def test_mutual_information_ranks_the_dependent_class_first_and_stays_finite():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(16, 5, 8))
    independent = rng.normal(size=(16, 5, 8))
    dependent = z @ rng.normal(size=(8, 8)) + 0.1 * rng.normal(size=(16, 5, 8))
    constant = np.zeros((16, 5, 8))  # a class whose gradient never moves: no NaN, no -inf
    g = torch.from_numpy(np.stack([independent, dependent, constant]))
    mi = gaussian_mutual_information(torch.from_numpy(z), g, ridge=1e-3)
    assert torch.isfinite(mi).all() and (mi >= -1e-9).all()
    assert (mi.argmax(dim=0) == 1).all()
    assert torch.allclose(mi[2], torch.zeros(5, dtype=mi.dtype), atol=1e-9)


def test_perturbed_views_are_small_seeded_rotations():
    x = torch.zeros(2, 1, 28, 28)
    x[:, :, 10:18, 13:15] = 1.0  # a vertical bar
    settings = Perturbation(samples=3, degrees=5.0, noise=0.0)
    first = perturbed_views(x, settings, torch.Generator().manual_seed(0))
    again = perturbed_views(x, settings, torch.Generator().manual_seed(0))
    assert first.shape == (6, 1, 28, 28)
    assert torch.equal(first, again)
    assert (first - x.repeat(3, 1, 1, 1)).abs().max() > 0  # moved
    assert (first.sum(dim=(1, 2, 3)) - x[0].sum()).abs().max() < 0.1 * x[0].sum()  # 5 degrees keeps the mass


def test_class_gradient_samples_shapes_and_finite_scores_on_lenet():
    torch.manual_seed(0)
    model = LeNet().eval()
    layers = LENET_DESCRIPTOR_LAYERS["l80"]
    x = torch.randn(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    settings = Perturbation(samples=5)
    z, g = class_gradient_samples(model, layers, x, settings, torch.Generator().manual_seed(1))
    assert z.shape == (5, 4, 80) and g.shape == (10, 5, 4, 80)
    # g_c = J^T (p - e_c): summed over classes with weights p it vanishes (sum_c p_c (p - e_c) = 0)
    probabilities = torch.stack([model(v.unsqueeze(0)).softmax(1)[0] for v in perturbed_views(
        x, settings, torch.Generator().manual_seed(1))]).double().reshape(5, 4, 10)
    weighted = (probabilities.permute(2, 0, 1).unsqueeze(-1) * g).sum(dim=0)
    assert weighted.abs().max() < 1e-6 * max(1.0, g.abs().max().item())
    for scores in (cross_covariance_trace(z, g), gaussian_mutual_information(z, g, settings.ridge)):
        assert scores.shape == (10, 4) and torch.isfinite(scores).all()
