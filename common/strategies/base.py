"""What every acquisition strategy receives and returns, and the strategy registry.

A strategy is a small object with one job: given the current models and the unlabelled pool,
return exactly `budget` distinct pool positions to label next. Score-based strategies only
define `score`; ranking (top-`budget`, seeded tie-breaks) lives once in `ScoreStrategy`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.datasets import Split
from common.gen_descr import Perturbation
from common.images import Images, take
from common.registry import Registry
from common.search import DEFAULT_SETTINGS, SearchSettings
from common.train import ToInput
from common.validation_folds import HeldOutFolds


@dataclass(frozen=True)
class AcquisitionOptions:
    """Knobs shared by strategies, set once per experiment from the CLI."""

    device: torch.device
    mc_samples: int = 20
    descriptor_layers: tuple[str, ...] = ()
    feature_layer: str = ""  # the penultimate layer (coreset features, BADGE embeddings)
    perturbation: Perturbation = Perturbation()  # fk-cov / fk-mi views
    vaal_steps: int = 300  # VAE + discriminator training steps per VAAL acquisition
    top_k: int = 32
    batch_size: int = 512
    progress: bool = False
    descriptor_store: str = "memory"  # FK descriptors: memory | disk (memmap under the run's scratch) | auto
    search: SearchSettings = DEFAULT_SETTINGS  # FK matching index (exact / IVF)


@dataclass(frozen=True)
class AcquisitionState:
    """Everything known when acquiring at iteration `iteration` (pool positions throughout)."""

    models: list[nn.Module]  # the ensemble (one model unless --ensemble)
    to_input: ToInput
    pool: Split  # every pool image; labels are only read by oracle strategies
    unlabelled: np.ndarray  # [U] positions into pool, sorted
    validation: Split
    iteration: int
    budget: int
    rng: np.random.Generator
    seed: int  # for torch-side randomness (dropout masks)
    options: AcquisitionOptions
    scratch: Path | None = None  # where disk-backed temporaries of this acquisition may go
    trained_before: bool = False  # the models were trained on a starting labelled set (--initial-labels)
    notes: dict = field(default_factory=dict)  # what the strategy measured, added to the metrics record

    def unlabelled_images(self) -> Images:
        return take(self.pool.images, self.unlabelled)


class Strategy(ABC):
    """Chooses the next images to label."""

    mc_dropout: bool = False  # build the task model with its MC-dropout layers
    uses_validation_labels: bool = False  # reads the labelled validation set (a labelling cost too)
    # trains on part of the validation set and reads the misses of the rest (common/validation_folds.py)
    held_out_folds: HeldOutFolds | None = None
    # RunSettings fields this strategy reads beyond the shared ones (common.experiment.SHARED_SETTINGS);
    # only these are stored with its runs and compared on resume
    run_settings: tuple[str, ...] = ()

    @abstractmethod
    def select(self, state: AcquisitionState) -> np.ndarray:
        """Exactly state.budget distinct positions from state.unlabelled."""


def top_scores(scores: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the `count` highest scores; equal scores are ordered by a seeded coin."""
    order = np.lexsort((rng.random(len(scores)), -scores))
    return order[:count]


class RandomStrategy(Strategy):
    """Uniform sampling without replacement (the baseline every method must beat)."""

    def select(self, state: AcquisitionState) -> np.ndarray:
        return state.rng.choice(state.unlabelled, size=state.budget, replace=False)


class ScoreStrategy(Strategy):
    """Rank unlabelled images by an informativeness score; random at b=0 while the model has seen no label
    (docs/method.md#baselines)."""

    random_first_iteration: bool = True

    @abstractmethod
    def scores(self, state: AcquisitionState) -> np.ndarray:
        """[U] informativeness of each unlabelled image, higher = label it sooner."""

    def select(self, state: AcquisitionState) -> np.ndarray:
        if self.random_first_iteration and state.iteration == 0 and not state.trained_before:
            return RandomStrategy().select(state)
        return state.unlabelled[top_scores(self.scores(state), state.budget, state.rng)]


STRATEGIES: Registry[Strategy] = Registry("method")
STRATEGIES.register("random", RandomStrategy())
