"""Classify your own image files with a model saved by run.py (any method, any iteration) or exported by
`label.py export` (PROJECT/export/model.pt: it carries its network, image size and class names).

The dataset, and so the model and its preprocessing, is read from the protocol.json of the run
folder the checkpoint lies in; --dataset names it for a checkpoint moved out of its run folder.
Each file is converted to the dataset's channels (grey or RGB) and sized as the dataset's
evaluation images are: resized to the fixed image size (the MNIST family: 28x28, a light digit on
a dark background, as MNIST's are; --invert for a dark digit on a light background), or for image
folders the shorter side resized and the centre cropped. An ensemble checkpoint averages its
members' softmax. Every file is decoded before anything is printed: one bad file is one error line
and exit code 2, with no predictions at all.
"""
from __future__ import annotations

from common.cli import exit_quietly_on_interrupt

if __name__ == "__main__":
    exit_quietly_on_interrupt()  # before the heavy imports: Ctrl-C while importing is one line too

import argparse
import json
from pathlib import Path

import torch

import datasets_available  # noqa: F401  (registers every dataset)
from common import storage
from common.cli import DefaultsHelpFormatter, OneLineErrorParser, positive_int, run_main
from common.datasets import DATASETS, DatasetSpec
from common.errors import UserError
from common.experiment import build_models
from common.images import read_image_file
from common.records import object_with_fields
from common.train import predict_probabilities, resolve_device
from labelling.model import project_spec

CHANNEL_MODES = {1: "L", 3: "RGB"}  # channels the model reads -> PIL mode the files are converted to


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, help="image files (any format PIL reads: PNG, JPEG, ...)")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a model_<B>.pt written by run.py (<out>/<dataset>/.../<method>/model_<B>.pt), or "
                             "PROJECT/export/model.pt written by label.py export")
    parser.add_argument("--dataset", default=None,
                        help=f"the checkpoint's dataset, one of: {', '.join(DATASETS.names())} "
                             "(default: the dataset of the nearest protocol.json above the checkpoint)")
    parser.add_argument("--top", type=positive_int, default=1, help="classes shown per image, most probable first")
    parser.add_argument("--invert", action="store_true",
                        help="invert the pixels (255 - value) after reading: for dark-on-light images given to "
                             "a model trained on light-on-dark ones (the MNIST family)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {path, class, probability, top: [{class, probability}, ...]}")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the GPU when PyTorch sees one, else the CPU")
    return parser


def checkpoint_dataset(checkpoint: Path) -> str:
    """The "dataset" of the nearest protocol.json in the folders above `checkpoint` (its run folder)."""
    for folder in checkpoint.resolve().parents:
        protocol = folder / "protocol.json"
        if protocol.is_file():
            return storage.read_json(protocol, object_with_fields({"dataset"}))["dataset"]
    raise UserError(f"no protocol.json in the folders above {checkpoint} (was it moved out of its run folder?); "
                    "name its dataset with --dataset")


def checkpoint_network(checkpoint: Path, content, dataset: str | None) -> tuple[DatasetSpec, list[str] | None]:
    """The checkpoint's network and preprocessing, and its class names when it carries them (label.py's)."""
    project = content.get("project") if isinstance(content, dict) else None
    if isinstance(project, dict):
        try:
            return project_spec(project["model"], list(project["classes"]), int(project["image_size"])), \
                list(project["classes"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{checkpoint}: its project description is damaged ({project!r:.100})") from None
    return DATASETS.get(dataset or checkpoint_dataset(checkpoint)), None


def load_ensemble(spec: DatasetSpec, checkpoint: Path, content) -> list[torch.nn.Module]:
    """Every ensemble member of a checkpoint's `content` ({"states": [state_dict, ...]}) as a `spec` model."""
    states = content.get("states") if isinstance(content, dict) else None
    if not isinstance(states, list) or not states or not all(isinstance(state, dict) for state in states):
        raise UserError(f"{checkpoint} is not a model checkpoint of run.py (expected a 'states' list of weights, "
                        "as in <method>/model_<B>.pt)")
    try:
        return build_models(spec, states, mc_dropout=False)
    except UserError as error:
        raise UserError(f"{checkpoint}: {error}") from None


def evaluation_images(spec: DatasetSpec, paths: list[Path], invert: bool) -> torch.Tensor:
    """Every file decoded and sized like the dataset's evaluation images: uint8 [N, C, H, W].

    All files are read before any prediction, so a damaged one stops the command before it prints anything.
    """
    channels = spec.image_shape[0] if spec.image_shape else len(spec.mean)
    if channels not in CHANNEL_MODES:
        raise UserError(f"{spec.name} models read {channels}-channel images; predict.py reads grey or RGB files only")
    if spec.evaluation_transform is not None:
        fit = spec.evaluation_transform
    elif spec.image_shape is not None:
        from torchvision.transforms import v2

        fit = v2.Resize(spec.image_shape[1:], antialias=True)  # to H x W: no crop, the whole image is kept
    else:
        raise UserError(f"the {spec.name} dataset states neither an image size nor an evaluation transform")
    images = []
    for path in paths:
        image = read_image_file(str(path), CHANNEL_MODES[channels])
        images.append(fit(255 - image if invert else image))
    return torch.stack(images)


def predictions(paths: list[Path], probabilities: torch.Tensor, top: int, names: list[str] | None = None) -> list[dict]:
    """Per image: the most probable class, its probability, and the `top` best classes in order (classes by
    name when the checkpoint names them, else by index)."""
    values, classes = probabilities.topk(top, dim=1)
    results = []
    for path, best_values, best_classes in zip(paths, values.tolist(), classes.tolist()):
        ranked = [{"class": names[c] if names else c, "probability": p} for c, p in zip(best_classes, best_values)]
        results.append({"path": str(path), "class": ranked[0]["class"], "probability": ranked[0]["probability"],
                        "top": ranked})
    return results


def main(args: argparse.Namespace) -> None:
    if not args.checkpoint.is_file():
        raise UserError(f"--checkpoint {args.checkpoint} does not exist or is not a file")
    content = storage.load_checkpoint(args.checkpoint)
    spec, names = checkpoint_network(args.checkpoint, content, args.dataset)
    if args.top > spec.num_classes:
        raise UserError(f"--top {args.top} is more than the {spec.num_classes} classes of {spec.name}")
    device = resolve_device(args.device)
    models = load_ensemble(spec, args.checkpoint, content)
    images = evaluation_images(spec, args.images, args.invert)
    probabilities = predict_probabilities(models, images, spec.normalise, device, spec.inference_batch_size)
    results = predictions(args.images, probabilities, args.top, names)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for result in results:  # dataset checkpoints carry no class names: their classes are indices
        ranked = ", ".join(f"{entry['class']} ({entry['probability']:.4f})" for entry in result["top"])
        print(f"{result['path']}: {ranked}")


if __name__ == "__main__":
    run_main(main, get_args_parser())
