"""The SimCLR-style start (common/contrastive.py, --unsupervised 2): the NT-Xent loss on a known case, its loss
falling on digits and its embedding separating classes better than a random network's."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.contrastive import nt_xent, pretrain_simclr, simclr_schedule
from common.gen_descr import layer_features
from conftest import assert_one_line_error, run_script_in_process
from mnist.lenet import LeNet


def test_nt_xent_of_views_that_match_only_their_partner():
    views = torch.eye(4, 8)  # four images, orthogonal projections; both views identical
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 6 * math.exp(0.0)))  # tau 0.5: partner 1/0.5, others 0
    assert nt_xent(views, views.clone()).item() == pytest.approx(expected, rel=1e-6)
    swapped = nt_xent(views, views[[1, 0, 3, 2]])  # each view's partner is now another image's twin
    assert swapped.item() > expected


def few_shot_accuracy(model, digits_data, digits_spec, per_class: int = 5, draws: int = 20) -> float:
    """1-NN test accuracy on normalised penultimate features with `per_class` labelled train images per class."""
    device = torch.device("cpu")
    train, _ = layer_features(model, digits_data.train.images, digits_spec.normalise, "fc1", device)
    test, _ = layer_features(model, digits_data.test.images, digits_spec.normalise, "fc1", device)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    labels, truth, rng = digits_data.train.labels.numpy(), digits_data.test.labels.numpy(), np.random.default_rng(0)
    scores = []
    for _ in range(draws):
        chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)])
        scores.append((labels[chosen][(test @ train[chosen].T).argmax(axis=1)] == truth).mean())
    return float(np.mean(scores))


def test_contrastive_pretraining_lowers_its_loss_and_separates_digits_better_than_a_random_network(
        digits_data, digits_spec):
    torch.manual_seed(0)
    model, untrained = LeNet(10), LeNet(10)
    untrained.load_state_dict(model.state_dict())
    schedule = simclr_schedule(digits_spec.pretrain_schedule, len(digits_data.train))
    assert schedule.epochs * -(-len(digits_data.train) // 256) >= 300
    _state, losses = pretrain_simclr(model, digits_data.train.images, schedule.with_epochs(40), digits_spec.normalise,
                                     "fc1", seed=0, device=torch.device("cpu"))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    pretrained, random = (few_shot_accuracy(m, digits_data, digits_spec) for m in (model, untrained))
    assert pretrained > random + 0.04, (pretrained, random)  # measured: 0.83 against 0.73


def test_unsupervised_2_starts_every_method_from_the_contrastive_model(run_main, monkeypatch, capsys, tmp_path):
    def run_plot_main(*args):
        return run_script_in_process("run_plot.py", args, monkeypatch, capsys)

    result = run_main("--out", tmp_path, "--methods", "typiclust", "--unsupervised", "2", "--runs", "1",
                      "--iterations", "1", "--epochs", "1", "--quiet", "--threads", "1")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "digits" / "ir10_val20" / "run0"
    assert (run / "initial" / "simclr_m0.pt").is_file() and not (run / "initial" / "rotation_m0.pt").exists()
    assert (run / "unsup2" / "typiclust" / "metrics.jsonl").is_file()
    plotted = run_plot_main("--out", tmp_path, "--dataset", "digits")  # the results contract takes unsupervised 2
    assert plotted.returncode == 0, plotted.stderr
    assert "SimCLR-pretrained start" in (tmp_path / "digits" / "plots" / "savings_ir10_val20_unsup2.md").read_text()
    assert "takes 0, 1 and/or 2" in assert_one_line_error(run_main("--out", tmp_path, "--unsupervised", "3"))
