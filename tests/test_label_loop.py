"""label.py next / import / status / export on a folder of digit PNGs with a scripted annotator: the whole loop,
the interactive mode against run.py, kills at any moment, the cold start, FK's fallback, every network."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.validation_folds import label_folds
from conftest import REPO_ROOT, assert_one_line_error
from labelling.project import FILE, Project
from labelling.step import balanced_accuracy, estimate_with_spread
from test_label import CLASSES, label_py, labelled

NAMES = CLASSES.split(",")


@pytest.fixture()
def pool(tmp_path: Path, digits_data) -> tuple[Path, dict[str, str]]:
    """150 digit images of the train split as PNG files, and their true classes by file name."""
    images = tmp_path / "images"
    images.mkdir()
    truth = {}
    for i in range(150):
        Image.fromarray(digits_data.train.images[i, 0].numpy()).save(images / f"d{i:03d}.png")
        truth[f"d{i:03d}.png"] = NAMES[int(digits_data.train.labels[i])]
    return images, truth


def init(project: Path, images: Path, *flags) -> None:
    result = label_py("init", project, "--images", images, "--classes", CLASSES, "--model", "lenet",
                      "--image-size", "28", *flags)
    assert result.returncode == 0, result.stderr


def batch_rows(project: Path, batch: int) -> list[dict]:
    return list(csv.DictReader((project / "batches" / f"{batch:03d}" / "batch.csv").open()))


def answer(project: Path, batch: int, truth: dict[str, str], target: Path) -> Path:
    """The scripted annotator: every image of the batch with its true class."""
    target.write_text("path,label\n" + "".join(f"{r['path']},{truth[r['path']]}\n" for r in batch_rows(project, batch)))
    return target


def test_the_whole_loop_cold_start_three_rounds_export_and_predict(tmp_path, pool):
    images, truth = pool
    project = tmp_path / "project"
    init(project, images)  # rotation-pretrained start, fk-nn: the defaults
    first = label_py("next", project, "--budget", "10")
    assert first.returncode == 0, first.stderr
    assert "picked by cold-start" in first.stdout
    folder = project / "batches" / "001"
    rows = batch_rows(project, 1)
    assert len(rows) == 10 and all(r["suggested"] == "" for r in rows)  # no trained network yet: no suggestion
    tasks = json.loads((folder / "tasks.json").read_text())
    assert [t["data"]["fkal_path"] for t in tasks] == [r["path"] for r in rows]
    assert all("predictions" not in t and t["data"]["image"].startswith("/data/local-files/?d=images/") for t in tasks)
    with Image.open(folder / "sheet.png") as sheet:
        assert sheet.size == (10 * 96, 96 + 14)

    asked = [r["path"] for r in rows]
    for batch in (1, 2, 3):
        imported = label_py("import", project, answer(project, batch, truth, tmp_path / f"a{batch}.csv"))
        assert imported.returncode == 0 and "10 new labels" in imported.stdout, imported.stderr
        step = label_py("next", project, "--budget", "10")
        assert step.returncode == 0, step.stderr
        assert "picked by fk-nn" in step.stdout or "picked by coreset" in step.stdout
        rows = batch_rows(project, batch + 1)
        assert not set(r["path"] for r in rows) & set(asked), "a batch asked again for an image"
        assert all(r["suggested"] in NAMES and 0 < float(r["confidence"]) <= 1 for r in rows)
        tasks = json.loads((project / "batches" / f"{batch + 1:03d}" / "tasks.json").read_text())
        assert all(t["predictions"][0]["result"][0]["value"]["choices"][0] in NAMES for t in tasks)
        asked += [r["path"] for r in rows]
    assert labelled(project) == {path: NAMES.index(truth[path]) for path in asked[:30]}

    status = label_py("status", project)
    assert "150 images, 30 labelled, 120 unlabelled" in status.stdout
    assert f"open: {project / 'batches' / '004'} (10 of 10 unlabelled)" in status.stdout
    assert "network model_003.pt: balanced accuracy" in status.stdout and "on 6 held-out labels" in status.stdout
    assert (project / "quality.png").is_file()

    export = label_py("export", project)
    assert export.returncode == 0, export.stderr
    exported = list(csv.reader((project / "export" / "labels.csv").open()))[1:]
    assert dict(exported) == {path: truth[path] for path in asked[:30]}
    files = [images / path for path in asked[30:33]]
    predicted = subprocess.run([sys.executable, "predict.py", *map(str, files), "--checkpoint",
                                project / "export" / "model.pt", "--json"], cwd=REPO_ROOT, capture_output=True,
                               text=True)
    assert predicted.returncode == 0, predicted.stderr
    assert [p["class"] in NAMES for p in json.loads(predicted.stdout)] == [True] * 3


def test_the_scripted_loop_matches_run_py_on_the_same_images_method_and_seed(tmp_path):
    """Within noise (benchmarks/label_loop.py states the comparison over 5 seeds): at every batch the
    exported network's test accuracy is within 0.2 of run.py's and both learn (above 0.4 at 80 labels)."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from label_loop import compare

    result = compare(tmp_path, seed=3, method="entropy")
    assert result["labels"] == [40, 60, 80]
    for reference, interactive in zip(result["run_py"], result["label_py"]):
        assert abs(reference - interactive) <= 0.2, result
    assert min(result["run_py"][-1], result["label_py"][-1]) > 0.4, result


def test_a_killed_next_leaves_no_batch_and_the_rerun_makes_the_uninterrupted_batch(tmp_path, pool):
    images, truth = pool
    (tmp_path / "start.csv").write_text("".join(f"d{i:03d}.png,{truth[f'd{i:03d}.png']}\n" for i in range(30)))
    calm, killed = tmp_path / "calm", tmp_path / "killed"
    for project in (calm, killed):
        init(project, images, "--labels", tmp_path / "start.csv", "--start", "random")
    assert label_py("next", calm, "--budget", "8", "--method", "entropy").returncode == 0

    process = subprocess.Popen([sys.executable, "label.py", "next", str(killed), "--budget", "8", "--method",
                                "entropy"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "models" / "start.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # while it trains: after the start network, before the model version
    process.wait()
    opened = Project.open(killed)
    try:
        assert opened.batches() == [] and opened.models() == []
    finally:
        opened.close()
    assert not (killed / "batches").exists() or not list((killed / "batches").iterdir())
    again = label_py("next", killed, "--budget", "8", "--method", "entropy")
    assert again.returncode == 0, again.stderr
    assert batch_rows(killed, 1) == batch_rows(calm, 1)  # same seed, same batch

    shutil.rmtree(killed / "batches" / "001")  # killed between the commit and the batch's files
    assert label_py("status", killed).returncode == 0
    assert batch_rows(killed, 1) == batch_rows(calm, 1)


def test_a_killed_import_imports_nothing_and_the_same_command_then_imports_everything(tmp_path, pool):
    images, truth = pool
    project = tmp_path / "project"
    init(project, images, "--start", "random")
    answers = tmp_path / "answers.csv"
    answers.write_text("".join(f"d{i:03d}.png,{truth[f'd{i:03d}.png']}\n" for i in range(20)))
    blocker = sqlite3.connect(project / FILE, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the import waits for this write transaction
    process = subprocess.Popen([sys.executable, "label.py", "import", str(project), str(answers)], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(6)  # imported its modules, read the file, waiting for the database
    assert process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    blocker.rollback()
    blocker.close()
    assert labelled(project) == {}
    again = label_py("import", project, answers)
    assert again.returncode == 0 and "20 new labels" in again.stdout
    assert len(labelled(project)) == 20


def test_an_fk_method_without_held_out_labels_falls_back_to_coreset_and_says_so(tmp_path, pool):
    images, truth = pool
    ones = [name for name, label in truth.items() if label == "one"][:2]
    (tmp_path / "ones.csv").write_text("".join(f"{name},one\n" for name in ones))
    project = tmp_path / "project"
    init(project, images, "--labels", tmp_path / "ones.csv", "--start", "random")  # folds 1 and 2: fold 0 is empty
    step = label_py("next", project, "--budget", "5")
    assert step.returncode == 0, step.stderr
    assert "picked by coreset" in step.stdout and "held-out fold 0, which holds no label yet" in step.stdout
    status = label_py("status", project)
    assert "note on batch 001: fk-nn reads the misses of held-out fold 0" in status.stdout
    assert "fewer labels than the 5 folds for zero (0), one (2)" in status.stdout


@pytest.mark.parametrize("flags, expected", [
    (["--method", "fk-oracle"], "reads pool labels while it picks"),
    (["--method", "direct"], "reads pool labels while it picks"),
    (["--method", "nope"], "nope"),
    (["--budget", "1000"], "is more than the 150 images left"),
])
def test_next_refuses_what_it_cannot_do_in_one_line(tmp_path, pool, flags, expected):
    images, _truth = pool
    project = tmp_path / "project"
    init(project, images, "--start", "random")
    arguments = ["--budget", "5", *flags] if "--budget" not in flags else flags
    assert expected in assert_one_line_error(label_py("next", project, *arguments))


def test_weights_start_the_network_and_a_file_that_does_not_fit_is_refused_at_init(tmp_path, pool):
    from mnist.lenet import LeNet

    images, _truth = pool
    torch.manual_seed(5)
    saved = LeNet(num_classes=1000).state_dict()  # another classifier: kept the project's own
    torch.save(saved, tmp_path / "weights.pt")
    project = tmp_path / "project"
    init(project, images, "--weights", tmp_path / "weights.pt")
    assert label_py("next", project, "--budget", "4").returncode == 0
    start = torch.load(project / "models" / "start.pt", weights_only=False)
    assert start["start"] == "weights"
    assert torch.equal(start["state"]["conv1.0.weight"], saved["conv1.0.weight"])
    assert start["state"]["fc2.weight"].shape == (10, 50)
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "foreign.pt")
    refused = label_py("init", tmp_path / "p2", "--images", images, "--classes", CLASSES, "--model", "lenet",
                       "--image-size", "28", "--weights", tmp_path / "foreign.pt")
    assert "shares no weight" in assert_one_line_error(refused) and not (tmp_path / "p2").exists()
    named = label_py("init", tmp_path / "p3", "--images", images, "--classes", CLASSES, "--model", "resnet18",
                     "--image-size", "32", "--weights", "ResNet18_Weights.IMAGENET1K_V1")  # downloaded at next
    assert named.returncode == 0, named.stderr
    opened = Project.open(tmp_path / "p3")
    try:
        assert (opened.settings["start"], opened.settings["weights"]) == ("weights", "ResNet18_Weights.IMAGENET1K_V1")
    finally:
        opened.close()
    bogus = label_py("init", tmp_path / "p4", "--images", images, "--classes", CLASSES, "--weights", "Nope.X")
    assert "neither a file nor a torchvision weights name" in assert_one_line_error(bogus)


@pytest.mark.parametrize("model, size", [("resnet10", 16), ("resnet18", 32)])
def test_the_resnets_read_grey_files_as_rgb_and_pick_and_train(tmp_path, pool, model, size):
    images, truth = pool
    (tmp_path / "start.csv").write_text("".join(f"d{i:03d}.png,{truth[f'd{i:03d}.png']}\n" for i in range(12)))
    project = tmp_path / "project"
    result = label_py("init", project, "--images", images, "--classes", CLASSES, "--model", model, "--image-size",
                      size, "--start", "random", "--labels", tmp_path / "start.csv")
    assert result.returncode == 0, result.stderr
    step = label_py("next", project, "--budget", "4", "--method", "margin")
    assert step.returncode == 0, step.stderr
    assert len(batch_rows(project, 1)) == 4 and all(r["suggested"] in NAMES for r in batch_rows(project, 1))


def test_folds_are_stratified_stable_as_labels_arrive_and_estimates_have_known_answers():
    classes = np.array([0, 0, 0, 1, 1, 2, 0, 1])
    folds = label_folds(classes, 3)
    assert folds.tolist() == [0, 1, 2, 1, 2, 2, 0, 0]
    assert label_folds(classes[:5], 3).tolist() == folds[:5].tolist()  # later labels move no fold
    truth = np.array([0, 0, 1, 1, 1, 1])
    assert balanced_accuracy(np.array([0, 1, 1, 1, 1, 1]), truth) == pytest.approx(0.75)
    perfect = estimate_with_spread(truth.copy(), truth, np.random.default_rng(0))
    assert perfect == (1.0, 0.0)
    estimate, spread = estimate_with_spread(np.array([0, 1, 1, 1, 0, 1]), truth, np.random.default_rng(0))
    assert estimate == pytest.approx(0.625) and 0.05 < spread < 0.4
