"""One active-learning step as small functions: acquire, fit, evaluate, persist.

A central run (common/experiment.py), a federated client or server (federated/) and an
asynchronous worker or server (asynchronous/) all call these, so the AL step exists once.
"""
from __future__ import annotations

import time
from collections.abc import Container, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common import storage
from common.datasets import Split
from common.images import Images, concat, take
from common.oracle import Oracle
from common.schedule import Schedule
from common.strategies import AcquisitionState, Strategy
from common.train import LossFunction, ToInput, accuracy_report, predict_probabilities, train_model


def acquire(strategy: Strategy, state: AcquisitionState, method: str) -> tuple[np.ndarray, float]:
    """The strategy's `state.budget` pool positions and the seconds it took; a strategy that breaks
    its contract (wrong count, repeats, labelled images) is a bug and fails loudly."""
    began = time.perf_counter()
    chosen = np.asarray(strategy.select(state), dtype=np.int64)
    seconds = time.perf_counter() - began
    check_selection(chosen, state.unlabelled, state.budget, method)
    return chosen, seconds


def check_selection(chosen: np.ndarray, unlabelled: np.ndarray, budget: int, method: str) -> None:
    if len(chosen) != budget or len(np.unique(chosen)) != budget or not np.isin(chosen, unlabelled).all():
        raise RuntimeError(f"{method} returned {len(chosen)} indices ({len(np.unique(chosen))} distinct), "
                           f"expected {budget} distinct unlabelled ones")


def training_set(
    pool: Split, oracle: Oracle, validation: Split | None = None, count: int | None = None,
) -> tuple[Images, torch.Tensor]:
    """The labelled pool images with the labels the oracle revealed (the first `count` in acquisition order
    when given: an asynchronous server trains on the labels that had arrived when it started), plus the
    labelled validation set when given (--train-on-validation)."""
    labelled = oracle.labelled if count is None else oracle.labelled[:count]
    images, labels = take(pool.images, labelled), oracle.labels(labelled)
    if validation is not None:
        images = concat(images, validation.images)
        labels = torch.cat([labels, validation.labels])
    return images, labels


def fit(
    models: Sequence[nn.Module], images: Images, labels: torch.Tensor, schedule: Schedule, to_input: ToInput,
    seeds: Sequence[int], device: torch.device, progress: bool = False, description: str = "train",
    loss: LossFunction | None = None,
) -> float:
    """Train every ensemble member in place (member m with seeds[m]); returns the seconds spent."""
    return sum(
        train_model(model, images, labels, schedule, to_input, seed, device, progress, description=description,
                    loss=loss)
        for model, seed in zip(models, seeds, strict=True)
    )


@dataclass
class Training:
    """A training an AL run asks of its executor: every ensemble member in place on (images, labels), member m
    with seeds[m]. The executor trains it one by one (`one_by_one`, the local and Ray executors) or together with
    other runs' same-shaped models (common/lockstep.py) and sends back the seconds it took."""

    models: Sequence[nn.Module]
    images: Images
    labels: torch.Tensor
    schedule: Schedule
    to_input: ToInput
    seeds: Sequence[int]
    device: torch.device
    progress: bool = False
    description: str = "train"

    def one_by_one(self) -> float:
        return fit(self.models, self.images, self.labels, self.schedule, self.to_input, self.seeds, self.device,
                   self.progress, self.description)


# An AL run as a generator: it yields each Training it needs and is sent the seconds the training took; it
# returns the run's metrics records (common.experiment.active_learning_steps).
Steps = Generator[Training, float, list[dict]]


def run_steps(steps: Steps) -> list[dict]:
    """Drive a run's steps to the end, training each request one by one; the run's records."""
    try:
        request = next(steps)
        while True:
            request = steps.send(request.one_by_one())
    except StopIteration as finished:
        return finished.value


def evaluate(
    models: Sequence[nn.Module], test: Split, to_input: ToInput, device: torch.device, num_classes: int,
    minority_classes: Sequence[int],
) -> dict:
    """Test accuracy, balanced, per-class and minority-class accuracy of the ensemble's mean softmax."""
    probs = predict_probabilities(models, test.images, to_input, device)
    return accuracy_report(probs.argmax(dim=1).numpy(), test.labels.numpy(), num_classes, minority_classes)


def save_acquired(folder: Path, iteration: int, ids: np.ndarray) -> None:
    """The acquired images of an iteration (train-split ids), saved before training for audit and replay."""
    storage.save_indices(folder / f"acquired_{iteration:03d}.npy", ids)


def checkpoint_path(folder: Path, iteration: int) -> Path:
    """The weights after an iteration (every mode's step: iteration, cycle, training)."""
    return folder / f"model_{iteration:03d}.pt"


def save_iteration(
    folder: Path, iteration: int, models: Sequence[nn.Module], record: dict, keep_checkpoints: Container[int] = (),
    extra: dict | None = None,
) -> None:
    """Finish an iteration: its weights (and `extra` state, e.g. a federated server's client models), then its
    metrics line (the line is what marks it finished), then drop the previous iteration's weights unless kept."""
    storage.save_checkpoint(checkpoint_path(folder, iteration),
                            {"states": [m.state_dict() for m in models], **(extra or {})})
    storage.append_jsonl(folder / "metrics.jsonl", record)
    if iteration - 1 not in keep_checkpoints:
        checkpoint_path(folder, iteration - 1).unlink(missing_ok=True)
