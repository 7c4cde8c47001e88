"""`label.py next`: one active-learning step on a user's project, with the AL step the simulations use.

Batch t (t = batches so far) on the labels L known now:
1. The network resumes from the latest model version (the first from the start network: rotation-
   pretrained on the pool, a saved state dict, or as drawn; models/start.pt).
2. L is dealt into `folds` class-stratified folds in the order images were first labelled (so an image keeps
   its fold as labels arrive); fold t mod folds is held out: the network trains on the others
   (common.loop.fit, the run's schedule) and is measured on it (balanced accuracy with a bootstrap spread),
   the estimate `status` shows.
3. The strategy (common.loop.acquire) picks `budget` images among the unlabelled ones not already out with
   annotators. The held-out fold is its validation set: FK's miss set is the held-out images the network
   gets wrong (as fk-nn-kfold reads a fold its network never saw).
   - No label yet (cold start): greedy k-centre on the start network's penultimate features, so the first
     batch covers the pool and rare-looking images are in it.
   - A method that reads validation labels (the FK family) while the held-out fold is empty: k-centre
     around the labelled images (coreset) instead, said in the batch's note.
4. Suggestions: the trained network's most probable class and its probability for each picked image.
The caller records the model version and the batch in one transaction (Project.record_next).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from common import loop, storage
from common.datasets import DatasetSpec, Split
from common.errors import UserError
from common.experiment import build_models
from common.gen_descr import layer_features
from common.images import Images, take
from common.search import DEFAULT_SETTINGS
from common.seeding import numpy_rng, torch_global_seed, torch_seed
from common.strategies import STRATEGIES, AcquisitionOptions, AcquisitionState
from common.strategies.diversity import greedy_k_centre
from common.train import accuracy_report, predict_probabilities
from common.unsup import pool_check_positions, pretrain_rotation, transfer_weights
from common.validation_folds import EMPTY_FOLD_FALLBACK, label_folds
from labelling.model import starting_weights

COLD_START = "k-centre on the start network's features (no label yet)"
# methods that read pool labels no annotator has given yet: fk-oracle (the truth), direct (its picks' labels
# while it picks, which a project could only answer over several rounds per batch)
NEEDS_TRUE_LABELS = ("fk-oracle", "direct")
BOOTSTRAP_RESAMPLES = 200


@dataclass
class Step:
    """What one `next` produced (the caller records it)."""

    chosen: np.ndarray  # pool positions, in the strategy's order
    used: str  # what picked them: the method, coreset (fallback) or the cold start
    note: str
    suggestions: np.ndarray | None = None  # [budget] class per chosen image (None: no trained network yet)
    confidence: np.ndarray | None = None
    model: dict | None = None  # the model version: labels, trained_on, held_out_fold, held_out, estimate
    state: dict | None = None  # its weights
    notes: dict = field(default_factory=dict)


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall over the classes present in `truth` (common.train.accuracy_report's balanced accuracy)."""
    classes = int(max(predicted.max(), truth.max())) + 1
    return accuracy_report(predicted, truth, classes, ())["balanced_acc"]


def estimate_with_spread(predicted: np.ndarray, truth: np.ndarray, rng: np.random.Generator,
                         resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Balanced accuracy on held-out labels and its bootstrap standard deviation (resampling the images)."""
    estimate = balanced_accuracy(predicted, truth)
    draws = rng.integers(len(truth), size=(resamples, len(truth)))
    spread = float(np.std([balanced_accuracy(predicted[d], truth[d]) for d in draws]))
    return estimate, spread


def start_state(spec: DatasetSpec, pool: Images, start: str, weights: str | None, seed: int, path: Path,
                device: torch.device, progress: bool, log: Callable[[str], None]) -> dict:
    """The network before any label, made once and kept in `path` (models/start.pt)."""
    if path.is_file():
        return storage.load_checkpoint(path, "state")
    with torch_global_seed(torch_seed(seed, "init", 0)):
        model = spec.model(spec.num_classes, False)
    state = model.state_dict()
    if start == "weights":
        state = starting_weights(spec, weights, model, progress)
    elif start == "rotation":
        with torch_global_seed(torch_seed(seed, "rotation-init", 0)):
            rotation_model = spec.model(4, False)
        check = pool_check_positions(len(pool), seed)
        log(f"rotation pretraining on the {len(pool)} pool images (once per project)")
        pretrained, accuracy = pretrain_rotation(rotation_model, pool, take(pool, check), spec.pretrain_schedule,
                                                 spec.normalise, torch_seed(seed, "rotation-train", 0), device,
                                                 progress)
        log(f"rotation accuracy {accuracy:.3f} on {len(check)} pool images")
        state = transfer_weights(pretrained, state, spec.classifier)
    storage.save_checkpoint(path, {"state": state, "start": start})
    return state


def k_centre(model: torch.nn.Module, spec: DatasetSpec, pool: Images, candidates: np.ndarray, centres: np.ndarray,
             budget: int, rng: np.random.Generator, device: torch.device) -> np.ndarray:
    """Greedy k-centre over the penultimate features of the `candidates` (pool positions), the `centres`
    counting as chosen already: `budget` candidate positions."""
    positions = np.concatenate([candidates, centres])
    features, _logits = layer_features(model, take(pool, positions), spec.normalise, spec.penultimate, device,
                                       spec.inference_batch_size)
    features = features.astype(np.float64)
    rows = greedy_k_centre(features[: len(candidates)], features[len(candidates):], budget, rng)
    return candidates[rows]


def check_method(method: str) -> None:
    STRATEGIES.get(method)  # an unknown name is a one-line error listing the registered ones
    if method in NEEDS_TRUE_LABELS:
        raise UserError(f"{method} reads pool labels while it picks: it runs in simulations (run.py), not on a "
                        "project")


def next_step(spec: DatasetSpec, pool: Images, labelled: np.ndarray, classes: np.ndarray, unlabelled: np.ndarray,
              previous: dict, batch: int, budget: int, method: str, seed: int, folds: int, device: torch.device,
              scratch: Path, progress: bool = False, log: Callable[[str], None] = print) -> Step:
    """Batch `batch` (see the module docstring): `labelled` pool positions in first-labelled order with their
    `classes`, `unlabelled` the positions that may be picked, `previous` the weights to resume from."""
    check_method(method)
    if budget > len(unlabelled):
        raise UserError(f"--budget {budget} is more than the {len(unlabelled)} images left to ask for")
    strategy = STRATEGIES.get(method)
    rng = numpy_rng(seed, "acquire", batch)
    if len(labelled) == 0:
        model = build_models(spec, [previous], mc_dropout=False)[0]
        chosen = k_centre(model, spec, pool, unlabelled, np.empty(0, dtype=np.int64), budget, rng, device)
        return Step(chosen=chosen, used="cold-start", note=COLD_START)

    fold_of = label_folds(classes, folds)
    held_out_fold = batch % folds
    held, trained = labelled[fold_of == held_out_fold], labelled[fold_of != held_out_fold]
    held_classes, trained_classes = classes[fold_of == held_out_fold], classes[fold_of != held_out_fold]
    models = build_models(spec, [previous], strategy.mc_dropout)
    loop.fit(models, take(pool, trained), torch.from_numpy(trained_classes), spec.schedule, spec.normalise,
             [torch_seed(seed, "train", batch, 0)], device, progress,
             description=f"train on {len(trained)} labels")
    model = {"labels": len(labelled), "trained_on": len(trained), "held_out_fold": held_out_fold,
             "held_out": len(held), "balanced_accuracy": None, "spread": None}
    if len(held):
        predicted = predict_probabilities(models, take(pool, held), spec.normalise, device,
                                          spec.inference_batch_size).argmax(dim=1).numpy()
        model["balanced_accuracy"], model["spread"] = estimate_with_spread(
            predicted, held_classes, numpy_rng(seed, "estimate", batch))

    used, note = method, ""
    if strategy.uses_validation_labels and len(held) == 0:
        used = EMPTY_FOLD_FALLBACK
        note = (f"{method} reads the misses of held-out fold {held_out_fold}, which holds no label yet "
                f"({len(labelled)} labels in {folds} folds): {EMPTY_FOLD_FALLBACK} (k-centre around the labelled images) instead")
    if used == EMPTY_FOLD_FALLBACK:
        chosen = k_centre(models[0], spec, pool, unlabelled, labelled, budget, rng, device)
        notes: dict = {}
    else:
        state = AcquisitionState(
            models=models, to_input=spec.normalise,
            pool=Split(images=pool, labels=torch.full((len(pool),), -1, dtype=torch.int64)),
            unlabelled=np.sort(unlabelled),
            validation=Split(images=take(pool, held), labels=torch.from_numpy(held_classes)),
            iteration=batch, budget=budget, rng=rng, seed=torch_seed(seed, "acquire", batch),
            options=AcquisitionOptions(
                device=device, descriptor_layers=spec.descriptor_layers[spec.default_layer_set],
                feature_layer=spec.penultimate, top_k=spec.top_k, batch_size=spec.inference_batch_size,
                progress=progress, descriptor_store="auto", search=replace(DEFAULT_SETTINGS, device=str(device))),
            scratch=scratch, trained_before=True,
        )
        chosen, _seconds = loop.acquire(strategy, state, method)
        notes = state.notes
    probabilities = predict_probabilities(models, take(pool, chosen), spec.normalise, device,
                                          spec.inference_batch_size)
    confidence, suggestions = probabilities.max(dim=1)
    return Step(chosen=chosen, used=used, note=note, suggestions=suggestions.numpy(),
                confidence=confidence.numpy(), model=model, state=models[0].state_dict(), notes=notes)
