"""The project-level commands that train: `next` (a batch) and `export` (the final network).

Kill safety: everything slow (training, picking) happens before anything is recorded; weights are written
atomically under a name the database does not know yet; the model version and the batch are recorded in
one transaction; the batch folder is written after that from the database (labelling/batch_files.py), and
any command rewrites a batch folder that is missing (a kill between the commit and the folder).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from common import loop, storage
from common.experiment import build_models
from common.images import take
from common.seeding import torch_seed
from labelling.batch_files import write_batch_files
from labelling.model import project_images, project_spec
from labelling.project import Project
from labelling.step import Step, next_step, start_state

EXPORT_FILE = "model.pt"


@dataclass(frozen=True)
class ProjectData:
    """A project's images as pool positions (id order) and its labels in first-labelled order."""

    paths: list[str]
    labelled: np.ndarray
    classes: np.ndarray


def project_data(project: Project) -> ProjectData:
    paths = project.image_paths()
    position = {path: index for index, path in enumerate(paths)}
    ordered = project.labels_in_order()
    return ProjectData(paths, np.asarray([position[path] for path, _c in ordered], dtype=np.int64),
                       np.asarray([label for _p, label in ordered], dtype=np.int64))


def project_network(project: Project):
    settings = project.settings
    return project_spec(settings["model"], project.classes, settings["image_size"])


def latest_weights(project: Project, pool, device: torch.device, progress: bool, log: Callable[[str], None]) -> dict:
    """The latest model version's weights, or the start network's (made once)."""
    versions = project.models()
    if versions:
        return storage.load_checkpoint(project.folder / "models" / versions[-1]["file"], "state")
    settings = project.settings
    return start_state(project_network(project), pool, settings["start"], settings["weights"], settings["seed"],
                       project.folder / "models" / "start.pt", device, progress, log)


def next_batch(project: Project, budget: int, method: str, device: torch.device, progress: bool = False,
               log: Callable[[str], None] = print) -> tuple[int, Step, list[str]]:
    """Train, pick and record batch number len(batches) + 1 (labelling/step.py); returns (its number, the step,
    images labelled while it ran and so left out of it)."""
    settings, spec = project.settings, project_network(project)
    data = project_data(project)
    pool = project_images(project.images_root, data.paths, settings["model"], settings["image_size"])
    asked = project.asked()
    free = np.setdiff1d(np.arange(len(data.paths)), data.labelled)
    unlabelled = free[[data.paths[p] not in asked for p in free]] if asked else free
    previous = latest_weights(project, pool, device, progress, log)
    number = len(project.batches())
    scratch = project.folder / "scratch"
    try:
        step = next_step(spec, pool, data.labelled, data.classes, unlabelled, previous, number, budget, method,
                         settings["seed"], settings["folds"], device, scratch, progress, log)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model = None
    if step.state is not None:
        file = f"model_{len(project.models()) + 1:03d}.pt"
        storage.save_checkpoint(project.folder / "models" / file, {"state": step.state})
        model = {**step.model, "file": file}
    rows = [(data.paths[position],
             None if step.suggestions is None else int(step.suggestions[rank]),
             None if step.confidence is None else float(step.confidence[rank]))
            for rank, position in enumerate(step.chosen)]
    batch, dropped = project.record_next(model, method, step.used, step.note, rows)
    write_batch_files(project, batch)
    return batch, step, dropped


def export_model(project: Project, device: torch.device, progress: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """The network trained on every label (resuming the latest model version), as a checkpoint predict.py
    reads: {"states": [weights], "project": {model, image_size, classes}, "labels": count}."""
    settings, spec = project.settings, project_network(project)
    data = project_data(project)
    pool = project_images(project.images_root, data.paths, settings["model"], settings["image_size"])
    models = build_models(spec, [latest_weights(project, pool, device, progress, log)], mc_dropout=False)
    if len(data.labelled):
        loop.fit(models, take(pool, data.labelled),
                 torch.from_numpy(data.classes), spec.schedule, spec.normalise,
                 [torch_seed(settings["seed"], "export", len(data.labelled))], device, progress,
                 description=f"train on all {len(data.labelled)} labels")
    return {"states": [models[0].state_dict()], "labels": int(len(data.labelled)),
            "project": {"model": settings["model"], "image_size": settings["image_size"],
                        "classes": list(project.classes)}}
