"""Confusion matrices and t-SNE maps of the models an active-learning run trained.

Reads the weights kept by run.py (the latest iteration always; earlier ones with
--keep-checkpoints) and draws, for the chosen methods side by side:
  - row-normalised confusion matrices on the test split;
  - with --tsne, t-SNE of the penultimate-layer features of a seeded sample of test images,
    coloured by class, misclassified images outlined, minority classes drawn as triangles
    (taken from the run's own protocol); --tsne-pixels adds a raw-pixel panel.
"""
from __future__ import annotations

from common.cli import exit_quietly_on_interrupt

if __name__ == "__main__":
    exit_quietly_on_interrupt()  # before the heavy imports: Ctrl-C while importing is one line too

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import datasets_available  # noqa: E402,F401  (registers every dataset)
from common import loop, storage  # noqa: E402
from common.cli import (  # noqa: E402
    DefaultsHelpFormatter, OneLineErrorParser, comma_list, imbalance_ratio, positive_int, run_main,
)
from common.datasets import DATASETS, DatasetSpec, Split  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.experiment import build_models  # noqa: E402
from common.methods import is_reference  # noqa: E402
from common.naming import INITIAL_KINDS, LOCAL_DATA, protocol_name, run_folder  # noqa: E402
from common.records import object_with_fields  # noqa: E402
from common.gen_descr import layer_features  # noqa: E402
from common.reporting import confusion_matrix, safe_name  # noqa: E402
from common.train import predict_logits, resolve_device  # noqa: E402


MIN_TSNE_POINTS = 5


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--dataset", default="digits", help=f"one of: {', '.join(DATASETS.names())}")
    parser.add_argument("--data-root", type=Path, default=None, help="as given to run.py")
    parser.add_argument("--out", type=Path, default=LOCAL_DATA, help="results folder given to run.py (default: local_data/)")
    parser.add_argument("--imbalance", type=imbalance_ratio, default=None, help="(default: the dataset's)")
    parser.add_argument("--val-per-class", type=positive_int, default=None, help="(default: the dataset's)")
    parser.add_argument("--run", type=int, default=0)
    parser.add_argument("--unsupervised", type=int, choices=tuple(range(len(INITIAL_KINDS))), default=0,
                        help="the initial model of the runs to show: 0 random, 1 rotation, 2 contrastive (SimCLR)")
    parser.add_argument("--iteration", type=int, default=None,
                        help="iteration whose model to show (default: the latest every chosen method has)")
    parser.add_argument("--methods", type=comma_list, default=None, help="(default: every method of the run)")
    parser.add_argument("--tsne", action="store_true", help="also draw t-SNE maps of penultimate features")
    parser.add_argument("--tsne-pixels", action="store_true", help="add a t-SNE panel of the raw pixels")
    parser.add_argument("--tsne-points", type=positive_int, default=2000, help="test images in the t-SNE sample")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser


def kept_iterations(method_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in method_dir.glob("model_*.pt"))


def choose(run_dir: Path, unsupervised: int, methods: list[str] | None, iteration: int | None) -> tuple[list[str], int]:
    """The methods to show and the iteration all of them kept weights for."""
    base = run_dir / f"unsup{unsupervised}"
    if not base.is_dir():
        raise UserError(f"no results in {base}; check --imbalance/--val-per-class/--run/--unsupervised")
    found = sorted(p.name for p in base.iterdir() if p.is_dir() and kept_iterations(p) and not is_reference(p.name))
    methods = methods or found
    missing = [m for m in methods if m not in found]
    if missing:
        raise UserError(f"no kept models for {missing} in {base}; found: {', '.join(found) or 'none'}")
    kept = {m: set(kept_iterations(base / m)) for m in methods}
    common_iterations = sorted(set.intersection(*kept.values()))
    if iteration is None:
        if not common_iterations:
            raise UserError(f"the methods kept no common iteration ({kept}); pass --iteration")
        return methods, common_iterations[-1]
    lacking = [m for m in methods if iteration not in kept[m]]
    if lacking:
        raise UserError(
            f"iteration {iteration} was not kept for {lacking} (kept: {sorted(kept[lacking[0]])}); "
            "re-run run.py with --keep-checkpoints all"
        )
    return methods, iteration


def load_model(spec: DatasetSpec, method_dir: Path, iteration: int) -> torch.nn.Module:
    states = storage.load_checkpoint(loop.checkpoint_path(method_dir, iteration), "states")
    return build_models(spec, states[:1], mc_dropout=False)[0]


def tsne_map(features: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(1.0, (len(features) - 1) / 3))  # must stay below the number of points
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(features)


def draw_confusions(matrices: dict[str, np.ndarray], title: str) -> plt.Figure:
    figure, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.4), squeeze=False)
    for axis, (method, matrix) in zip(axes[0], matrices.items()):
        axis.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        for (t, p), value in np.ndenumerate(matrix):
            if value >= 0.005:
                axis.text(p, t, f"{value:.2f}"[1:] if value < 1 else "1", ha="center", va="center", fontsize=6,
                          color="white" if value > 0.6 else "black")
        axis.set_title(method)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_xticks(range(len(matrix)))
        axis.set_yticks(range(len(matrix)))
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def draw_tsne(maps: dict[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, minority: set[int],
              num_classes: int, title: str) -> plt.Figure:
    """maps: panel name -> (2-D points [N, 2], predictions [N] or None for raw pixels)."""
    figure, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 5), squeeze=False)
    colours = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    for axis, (name, (points, predicted)) in zip(axes[0], maps.items()):
        for cls in range(num_classes):
            members = labels == cls
            axis.scatter(points[members, 0], points[members, 1], s=6, color=colours(cls % colours.N),
                         marker="^" if cls in minority else "o",
                         label=f"{cls}{' (minority)' if cls in minority else ''}")
        if predicted is not None:
            wrong = predicted != labels
            axis.scatter(points[wrong, 0], points[wrong, 1], s=22, facecolors="none", edgecolors="black",
                         linewidths=0.6, label="misclassified")
            name = f"{name} ({wrong.mean():.1%} wrong)"
        axis.set_title(name, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0][0].legend(fontsize=6, markerscale=1.5, loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def main(args: argparse.Namespace) -> None:
    spec = DATASETS.get(args.dataset)
    if args.tsne_points < MIN_TSNE_POINTS:
        raise UserError(f"--tsne-points must be at least {MIN_TSNE_POINTS}, got {args.tsne_points}")
    imbalance = args.imbalance if args.imbalance is not None else spec.default_imbalance
    val_per_class = args.val_per_class or spec.val_per_class
    run_dir = run_folder(args.out, spec.name, imbalance, val_per_class, args.run)
    if not (run_dir / "protocol.json").exists():
        raise UserError(f"no run at {run_dir}; check --out/--dataset/--imbalance/--val-per-class/--run")
    protocol = storage.read_json(run_dir / "protocol.json", object_with_fields({"minority_classes", "seed"}))
    minority = set(protocol["minority_classes"])
    methods, iteration = choose(run_dir, args.unsupervised, args.methods, args.iteration)
    device = resolve_device(args.device)
    test: Split = spec.load(args.data_root, False)
    truth = test.labels.numpy()
    models = {m: load_model(spec, run_dir / f"unsup{args.unsupervised}" / m, iteration) for m in methods}
    plots = args.out / spec.name / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    stem = safe_name(f"{protocol_name(imbalance, val_per_class)}_unsup{args.unsupervised}_run{args.run}_b{iteration}")
    title = f"{spec.name}, imbalance {imbalance:g}, run {args.run}, iteration {iteration}"

    predictions = {m: predict_logits(model, test.images, spec.normalise, device).argmax(1).numpy()
                   for m, model in models.items()}
    matrices = {m: confusion_matrix(p, truth, spec.num_classes) for m, p in predictions.items()}
    figure = draw_confusions(matrices, title + " (rows: true class, normalised)")
    figure.savefig(plots / f"confusion_{stem}.png", dpi=120)
    plt.close(figure)
    print(plots / f"confusion_{stem}.png")

    if args.tsne or args.tsne_pixels:
        rng = np.random.default_rng(protocol["seed"])
        sample = np.sort(rng.choice(len(test), size=min(args.tsne_points, len(test)), replace=False))
        images = test.images[torch.from_numpy(sample)]
        maps = {}
        if args.tsne_pixels:
            maps["raw pixels"] = (tsne_map(images.flatten(1).float().numpy() / 255.0, protocol["seed"]), None)
        if args.tsne:
            for method, model in models.items():
                features, _ = layer_features(model, images, spec.normalise, spec.penultimate, device)
                maps[method] = (tsne_map(features, protocol["seed"]), predictions[method][sample])
        figure = draw_tsne(maps, truth[sample], minority, spec.num_classes, title + f", {len(sample)} test images")
        figure.savefig(plots / f"tsne_{stem}.png", dpi=120)
        plt.close(figure)
        print(plots / f"tsne_{stem}.png")


if __name__ == "__main__":
    run_main(main, get_args_parser())
