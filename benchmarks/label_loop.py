"""The interactive mode against the benchmarks: label.py driven by a scripted annotator, beside run.py, on the
same images, method and seed.

For each seed: run.py on digits (balanced, 20 starting labels, 3 x 20 acquisitions, a random start);
then a label.py project of exactly that run's pool images, saved as PNG files, with the same 20
starting labels given at init; three rounds of next / import (the annotator answers from the true labels)
/ export, each exported network measured on the digits test split, which run.py measures on too.
What differs by design: label.py's network trains on all labels but a held-out fold at `next` (the fold
measures it and is FK's miss set) and on every label at `export`; run.py trains on every label once per
iteration; their random streams differ, so the picks differ. Tables go to benchmarks/results/label_loop.md.

    python benchmarks/label_loop.py [--seeds 0,1,2] [--method entropy] [--out local_data/bench-label-loop]
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import datasets_available  # noqa: E402,F401  (registers every dataset)
from common.datasets import DATASETS  # noqa: E402
from common.experiment import initial_label_positions  # noqa: E402
from common.train import predict_probabilities  # noqa: E402
from labelling.model import project_spec  # noqa: E402
from predict import load_ensemble  # noqa: E402

START, BUDGET, BATCHES = 20, 20, 3
CLASSES = [str(digit) for digit in range(10)]
RESULTS = REPO / "benchmarks" / "results" / "label_loop.md"


def command(*args) -> str:
    result = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(map(str, args[:2]))} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def run_py_curve(out: Path, seed: int, method: str) -> tuple[list[tuple[int, float]], Path]:
    """run.py's accuracy after each acquisition [(labelled, test accuracy)] and its run folder."""
    command("run.py", "--dataset", "digits", "--imbalance", "1", "--methods", method, "--runs", "1", "--seed", seed,
            "--initial-labels", START, "--budget", BUDGET, "--iterations", BATCHES, "--unsupervised", "0",
            "--out", out, "--threads", "1", "--quiet")
    metrics = next(out.glob(f"digits/**/run0/unsup0/{method}/metrics.jsonl"))
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [(r["labelled"], r["test_acc"]) for r in records], metrics.parents[2]


def write_pool(run_folder: Path, seed: int, images: Path) -> tuple[dict[str, int], list[str]]:
    """The run's pool images as PNG files: {file name: true class} and the starting set's file names."""
    from PIL import Image

    train = DATASETS.get("digits").load(None, True)
    pool = np.load(run_folder / "split.npz")["pool_indices"]
    images.mkdir(parents=True, exist_ok=True)
    truth = {}
    for position, index in enumerate(pool):
        name = f"pool{position:04d}.png"
        Image.fromarray(train.images[index, 0].numpy()).save(images / name)
        truth[name] = int(train.labels[index])
    start = [f"pool{p:04d}.png" for p in initial_label_positions(len(pool), START, seed)]
    return truth, start


def answer(batch_csv: Path, truth: dict[str, int], target: Path) -> None:
    """The scripted annotator: every image of the batch with its true class."""
    rows = list(csv.DictReader(batch_csv.open()))
    target.write_text("path,label\n" + "".join(f"{r['path']},{CLASSES[truth[r['path']]]}\n" for r in rows))


def exported_accuracy(checkpoint: Path) -> float:
    """The exported network's accuracy on the digits test split (what run.py measures)."""
    test = DATASETS.get("digits").load(None, False)
    content = torch.load(checkpoint, weights_only=False)
    spec = project_spec(content["project"]["model"], content["project"]["classes"], content["project"]["image_size"])
    models = load_ensemble(spec, checkpoint, content)
    predicted = predict_probabilities(models, test.images, spec.normalise, torch.device("cpu")).argmax(dim=1)
    return float((predicted == test.labels).float().mean())


def label_py_curve(work: Path, truth: dict[str, int], start: list[str], seed: int, method: str,
                   ) -> list[tuple[int, float]]:
    """The scripted loop's accuracy after each batch [(labelled, test accuracy of the exported network)]."""
    project = work / "project"
    (work / "start.csv").write_text("path,label\n" + "".join(f"{n},{CLASSES[truth[n]]}\n" for n in start))
    command("label.py", "init", project, "--images", work / "images", "--classes", ",".join(CLASSES),
            "--labels", work / "start.csv", "--model", "lenet", "--image-size", 28, "--start", "random",
            "--seed", seed)
    curve = []
    for batch in range(1, BATCHES + 1):
        command("label.py", "next", project, "--budget", BUDGET, "--method", method, "--threads", 1)
        answer(project / "batches" / f"{batch:03d}" / "batch.csv", truth, work / f"answers{batch}.csv")
        command("label.py", "import", project, work / f"answers{batch}.csv")
        command("label.py", "export", project, "--threads", 1)
        curve.append((START + batch * BUDGET, exported_accuracy(project / "export" / "model.pt")))
    return curve


def compare(out: Path, seed: int, method: str) -> dict:
    """Both curves for one seed: {"labels": [...], "run_py": [...], "label_py": [...]}."""
    reference, run_folder = run_py_curve(out / f"seed{seed}" / "run", seed, method)
    work = out / f"seed{seed}" / "label"
    truth, start = write_pool(run_folder, seed, work / "images")
    interactive = label_py_curve(work, truth, start, seed, method)
    assert [n for n, _a in reference] == [n for n, _a in interactive]
    return {"labels": [n for n, _a in reference], "run_py": [a for _n, a in reference],
            "label_py": [a for _n, a in interactive]}


def report(results: dict[int, dict], method: str) -> str:
    labels = next(iter(results.values()))["labels"]
    run_py = np.array([r["run_py"] for r in results.values()])
    label_py = np.array([r["label_py"] for r in results.values()])
    difference = label_py - run_py
    lines = [f"# label.py (scripted annotator) against run.py: digits, {method}, {len(results)} seeds", "",
             "Generated by `benchmarks/label_loop.py`. Test accuracy on the digits test split after each batch "
             f"({START} starting labels, batches of {BUDGET}); mean ± std over seeds {', '.join(map(str, results))}.",
             "", "| labels | run.py | label.py | label.py - run.py | run-to-run std of run.py |", "|---|---|---|---|---|"]
    for column, count in enumerate(labels):
        lines.append(f"| {count} | {run_py[:, column].mean():.3f} ± {run_py[:, column].std():.3f} | "
                     f"{label_py[:, column].mean():.3f} ± {label_py[:, column].std():.3f} | "
                     f"{difference[:, column].mean():+.3f} ± {difference[:, column].std():.3f} | "
                     f"{run_py[:, column].std():.3f} |")
    lines += ["", "Per seed (run.py / label.py): " + "; ".join(
        f"seed {seed}: " + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(r["run_py"], r["label_py"]))
        for seed, r in results.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--method", default="entropy")
    parser.add_argument("--out", type=Path, default=REPO / "local_data" / "bench-label-loop")
    args = parser.parse_args()
    results = {seed: compare(args.out, seed, args.method) for seed in map(int, args.seeds.split(","))}
    text = report(results, args.method)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
